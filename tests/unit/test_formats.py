"""CII, Factur-X, CODA and camt.053 beyond the corpus: credit notes, versions, refusals."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfWriter

from gateway.rules.recognize import DossierFacts, Recognition, recognize
from gateway.rules.statement import belgian_iban
from gateway.store.models import DocType

CII_NS = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
RAM = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
SELLER, BUYER = "FR11999999998", "BE0123456749"


def cii(type_code: str = "380", due: str = "470.15", buyer: str = BUYER) -> bytes:
    return f"""<rsm:CrossIndustryInvoice xmlns:rsm="{CII_NS}" xmlns:ram="{RAM}"
  xmlns:udt="urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100">
 <rsm:ExchangedDocumentContext><ram:GuidelineSpecifiedDocumentContextParameter>
  <ram:ID>urn:cen.eu:en16931:2017</ram:ID></ram:GuidelineSpecifiedDocumentContextParameter>
 </rsm:ExchangedDocumentContext>
 <rsm:ExchangedDocument><ram:ID>FA-1</ram:ID><ram:TypeCode>{type_code}</ram:TypeCode>
  <ram:IssueDateTime><udt:DateTimeString format="102">20240301</udt:DateTimeString>
  </ram:IssueDateTime></rsm:ExchangedDocument>
 <rsm:SupplyChainTradeTransaction>
  <ram:ApplicableHeaderTradeAgreement>
   <ram:SellerTradeParty><ram:Name>Seller</ram:Name><ram:SpecifiedTaxRegistration>
    <ram:ID schemeID="VA">{SELLER}</ram:ID></ram:SpecifiedTaxRegistration></ram:SellerTradeParty>
   <ram:BuyerTradeParty><ram:Name>Buyer</ram:Name><ram:SpecifiedTaxRegistration>
    <ram:ID schemeID="VA">{buyer}</ram:ID></ram:SpecifiedTaxRegistration></ram:BuyerTradeParty>
  </ram:ApplicableHeaderTradeAgreement>
  <ram:ApplicableHeaderTradeSettlement><ram:InvoiceCurrencyCode>EUR</ram:InvoiceCurrencyCode>
   <ram:SpecifiedTradeSettlementHeaderMonetarySummation>
    <ram:DuePayableAmount>{due}</ram:DuePayableAmount>
   </ram:SpecifiedTradeSettlementHeaderMonetarySummation></ram:ApplicableHeaderTradeSettlement>
 </rsm:SupplyChainTradeTransaction>
</rsm:CrossIndustryInvoice>""".encode()


def pdf(attachments: dict[str, bytes] | None = None, password: str = "", owner: str = "") -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    for name, data in (attachments or {}).items():
        writer.add_attachment(name, data)
    if password or owner:
        writer.encrypt(user_password=password, owner_password=owner or password)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def run(data: bytes, vat: str = BUYER, ibans: tuple[str, ...] = ()) -> Recognition:
    return recognize("doc", "", data, DossierFacts(vat, "", ibans))


def code(found: Recognition) -> str:
    assert found.doc_type is None
    return found.reason.split(":", 1)[0]


@pytest.mark.parametrize(
    ("type_code", "due", "expected"),
    [
        ("380", "470.15", DocType.PURCHASE_INVOICE),
        ("381", "470.15", DocType.PURCHASE_CREDIT_NOTE),
        ("380", "-470.15", DocType.PURCHASE_CREDIT_NOTE),
    ],
)
def test_cii_credit_by_type_code_or_negative_total(
    type_code: str, due: str, expected: DocType
) -> None:
    found = run(cii(type_code, due))
    assert found.doc_type is expected, found.reason
    assert found.facts["syntax"] == "cii"
    assert found.facts["issue_date"] == "2024-03-01"


def test_cii_seller_side_is_sales() -> None:
    assert run(cii(), vat="FR 11 999 999 998").doc_type is DocType.SALES_INVOICE


def test_factur_x_pdf_is_its_xml() -> None:
    found = run(pdf({"factur-x.xml": cii(), "note.xml": b"<x/>"}))
    assert found.doc_type is DocType.PURCHASE_INVOICE
    assert found.facts["embedded_xml"] == "factur-x.xml"
    assert found.facts["container"] == "pdf"


def test_factur_x_party_mismatch_is_not_rescued_by_the_pdf() -> None:
    assert code(run(pdf({"factur-x.xml": cii(buyer="DE123456789")}))) == "party-mismatch"


def test_pdf_with_unknown_xml_stays_a_pdf_and_says_so() -> None:
    found = run(pdf({"order-x.xml": b"<Order/>"}))
    assert code(found) == "pdf-no-text"
    assert "embedded order-x.xml ignored: root Order is not an invoice" in found.reason
    assert found.facts["syntax"] == "pdf"


def test_encrypted_pdf_is_refused_with_that_reason() -> None:
    assert code(run(pdf({"factur-x.xml": cii()}, password="secret"))) == "pdf-encrypted"


def test_owner_password_only_pdf_is_read() -> None:
    assert run(pdf({"factur-x.xml": cii()}, owner="owner")).doc_type is DocType.PURCHASE_INVOICE


@pytest.mark.parametrize("cut", [20, 200, -40])
def test_truncated_pdf_is_broken_not_an_exception(cut: int) -> None:
    found = run(pdf({"factur-x.xml": cii()})[:cut])
    assert code(found) in ("pdf-broken", "pdf-no-text")


def coda(account_line: str, version: str = "2", company: str = "00123456749") -> bytes:
    header = (
        f"0000001022472505        00265207  CLIENT NV                 KREDBEBB   {company} 00000"
    )
    header = header.ljust(127) + version
    trailer = "9".ljust(128)
    return "\r\n".join((header, account_line.ljust(128), trailer)).encode("latin-1")


BE_IBAN_RECORD = "12042BE68539007547034                  EUR0000000000100000010224CLIENT NV"


def test_belgian_bban_to_iban() -> None:
    assert belgian_iban("539007547034") == "BE68539007547034"


def test_coda_matches_by_iban_in_any_spelling() -> None:
    found = run(coda(BE_IBAN_RECORD), vat="", ibans=("be68 5390 0754 7034",))
    assert found.doc_type is DocType.BANK_STATEMENT, found.reason
    assert found.facts["accounts"] == ["BE68539007547034"]
    assert found.facts["issue_date"] == "2024-02-01"


def test_coda_old_belgian_account_number_matches_its_iban() -> None:
    record = "10042539007547034 EUR0BE                  0000000000100000010224CLIENT NV"
    found = run(coda(record), vat="", ibans=("BE68539007547034",))
    assert found.doc_type is DocType.BANK_STATEMENT, found.reason


def test_coda_matches_by_holder_company_number() -> None:
    assert run(coda(BE_IBAN_RECORD), vat="BE 0123.456.749").doc_type is DocType.BANK_STATEMENT


def test_coda_of_another_company_is_refused() -> None:
    found = run(coda(BE_IBAN_RECORD), vat="BE0987654321", ibans=("BE71096123456769",))
    assert code(found) == "account-mismatch"
    assert "BE68539007547034" in found.reason


def test_coda_bad_version_and_missing_balance_are_broken() -> None:
    assert code(run(coda(BE_IBAN_RECORD, version="7"))) == "coda-broken"
    assert code(run(coda("21000100000"))) == "coda-broken"


def test_statement_for_a_dossier_without_any_number() -> None:
    assert code(run(coda(BE_IBAN_RECORD), vat="")) == "dossier-unidentified"


def camt(version: str = "053.001.08", iban: str = "BE68539007547034") -> bytes:
    return f"""<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.{version}"><BkToCstmrStmt>
<GrpHdr><MsgId>M1</MsgId><CreDtTm>2024-03-01T10:00:00</CreDtTm></GrpHdr>
<Stmt><Id>S1</Id><ElctrncSeqNb>7</ElctrncSeqNb><CreDtTm>2024-03-01T10:00:00</CreDtTm>
<Acct><Id><IBAN>{iban}</IBAN></Id><Ccy>EUR</Ccy><Ownr><Nm>Client NV</Nm></Ownr></Acct>
</Stmt></BkToCstmrStmt></Document>""".encode()


@pytest.mark.parametrize("version", ["053.001.02", "053.001.04", "053.001.08", "053.001.13"])
def test_camt053_any_version(version: str) -> None:
    found = run(camt(version), vat="", ibans=("BE68539007547034",))
    assert found.doc_type is DocType.BANK_STATEMENT, found.reason
    assert found.facts["number"] == "7"


def test_camt052_is_not_a_statement() -> None:
    assert code(run(camt("052.001.08"), ibans=("BE68539007547034",))) == "unsupported-format"


def test_xml_mentioning_the_pdf_magic_is_still_xml() -> None:
    data = cii().replace(
        b"<rsm:ExchangedDocumentContext>", b"<!-- %PDF-1.7 --><rsm:ExchangedDocumentContext>"
    )
    assert run(data).doc_type is DocType.PURCHASE_INVOICE


def test_a_pdf_behind_some_junk_is_still_a_pdf() -> None:
    found = run(b"garbage from a scanner\r\n" + pdf({"factur-x.xml": cii()}))
    assert found.doc_type is DocType.PURCHASE_INVOICE


def test_coda_after_a_bom_and_blank_lines_is_still_coda() -> None:
    data = b"\xef\xbb\xbf\r\n" + coda(BE_IBAN_RECORD)
    assert run(data, vat="", ibans=("BE68539007547034",)).doc_type is DocType.BANK_STATEMENT
