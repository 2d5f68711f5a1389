"""recognize(): format by content, purchase/sales by the dossier's side, reasons when neither."""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass, field

import pytest

from gateway.rules.recognize import DossierFacts, Recognition, recognize
from gateway.rules.ubl import embedded_pdf, read_ubl
from gateway.rules.xmlsafe import parse_xml
from gateway.store.models import DocType

UBL = "urn:oasis:names:specification:ubl:schema:xsd:"
SUPPLIER_VAT = "GB1232434"
CUSTOMER_VAT = "BE0123456749"


@dataclass(frozen=True)
class PartySpec:
    vat: str = ""
    company: tuple[str, str] | None = None
    endpoint: tuple[str, str] | None = None
    tax_schemes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DocSpec:
    root: str = "Invoice"
    type_code: str = "380"
    payable: str = "1656.25"
    supplier: PartySpec = field(default_factory=lambda: PartySpec(vat=SUPPLIER_VAT))
    customer: PartySpec = field(default_factory=lambda: PartySpec(vat=CUSTOMER_VAT))
    attachment: str = ""


def schemed(tag: str, pair: tuple[str, str] | None) -> str:
    if pair is None:
        return ""
    scheme, value = pair
    return f'<cbc:{tag} schemeID="{scheme}">{value}</cbc:{tag}>'


def party_xml(role: str, name: str, spec: PartySpec) -> str:
    schemes = ((spec.vat, "VAT"),) if spec.vat else ()
    tax = "".join(
        f"<cac:PartyTaxScheme><cbc:CompanyID>{value}</cbc:CompanyID>"
        f"<cac:TaxScheme><cbc:ID>{scheme}</cbc:ID></cac:TaxScheme></cac:PartyTaxScheme>"
        for value, scheme in spec.tax_schemes + schemes
    )
    legal = (
        f"<cac:PartyLegalEntity><cbc:RegistrationName>{name} NV</cbc:RegistrationName>"
        f"{schemed('CompanyID', spec.company)}</cac:PartyLegalEntity>"
    )
    return (
        f"<cac:{role}><cac:Party>{schemed('EndpointID', spec.endpoint)}"
        f"<cac:PartyName><cbc:Name>{name}</cbc:Name></cac:PartyName>{tax}{legal}"
        f"</cac:Party></cac:{role}>"
    )


def ubl(spec: DocSpec | None = None) -> bytes:
    spec = spec or DocSpec()
    attachment = (
        "<cac:AdditionalDocumentReference><cbc:ID>INV/1</cbc:ID><cac:Attachment>"
        f'<cbc:EmbeddedDocumentBinaryObject mimeCode="application/pdf" filename="a/b/inv 1.pdf">'
        f"{spec.attachment}</cbc:EmbeddedDocumentBinaryObject></cac:Attachment>"
        "</cac:AdditionalDocumentReference>"
        if spec.attachment
        else ""
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<{spec.root} xmlns="{UBL}{spec.root}-2"
    xmlns:cac="{UBL}CommonAggregateComponents-2" xmlns:cbc="{UBL}CommonBasicComponents-2">
  <cbc:CustomizationID>urn:cen.eu:en16931:2017</cbc:CustomizationID>
  <cbc:ProfileID>urn:fdc:peppol.eu:2017:poacc:billing:01:1.0</cbc:ProfileID>
  <cbc:ID>INV/1</cbc:ID>
  <cbc:IssueDate>2024-03-01</cbc:IssueDate>
  <cbc:{spec.root}TypeCode>{spec.type_code}</cbc:{spec.root}TypeCode>
  <cbc:DocumentCurrencyCode>EUR</cbc:DocumentCurrencyCode>
  {attachment}
  {party_xml("AccountingSupplierParty", "Supplier", spec.supplier)}
  {party_xml("AccountingCustomerParty", "Customer", spec.customer)}
  <cac:LegalMonetaryTotal>
    <cbc:PayableAmount currencyID="EUR">{spec.payable}</cbc:PayableAmount>
  </cac:LegalMonetaryTotal>
</{spec.root}>
""".encode()


def run(
    data: bytes, vat: str = "", company: str = "", name: str = "doc.xml", media: str = "text/xml"
) -> Recognition:
    return recognize(name, media, data, DossierFacts(vat_number=vat, company_number=company))


def code(recognition: Recognition) -> str:
    assert recognition.doc_type is None
    return recognition.reason.split(":", 1)[0]


def test_dossier_as_customer_is_a_purchase() -> None:
    found = run(ubl(), vat=CUSTOMER_VAT)
    assert found.doc_type is DocType.PURCHASE_INVOICE
    assert found.reason == "purchase: dossier is the customer (BE0123456749)"


def test_dossier_as_supplier_is_a_sale() -> None:
    found = run(ubl(), vat="gb 123 2434")
    assert found.doc_type is DocType.SALES_INVOICE
    assert found.reason.startswith("sales: dossier is the supplier")


def test_dossier_on_neither_side_is_a_party_mismatch() -> None:
    found = run(ubl(), vat="BE0000000196")
    assert found.doc_type is None
    assert found.reason == (
        "party-mismatch: dossier BE0000000196 is neither supplier (GB1232434) "
        "nor customer (BE0123456749)"
    )
    assert found.facts["number"] == "INV/1"


def test_dossier_on_both_sides_is_a_party_mismatch() -> None:
    spec = DocSpec(customer=PartySpec(vat=SUPPLIER_VAT))
    found = run(ubl(spec), vat=SUPPLIER_VAT)
    assert code(found) == "party-mismatch"
    assert " is both supplier " in found.reason


def test_vat_of_one_side_and_company_number_of_the_other_is_both() -> None:
    found = run(ubl(), vat=SUPPLIER_VAT, company="0123.456.749")
    assert code(found) == "party-mismatch"


def test_dossier_without_numbers_is_unidentified() -> None:
    assert code(run(ubl(), vat=" ", company="")) == "dossier-unidentified"


@pytest.mark.parametrize(
    ("vat", "company"),
    [
        ("BE 0123.456.749", ""),
        ("BTW BE0123456749", ""),
        ("", "0123456749"),
        ("", "0123.456.749"),
        ("", "123.456.749"),
        ("BE0999999999", "0123456749"),
    ],
)
def test_dossier_numbers_match_in_any_spelling(vat: str, company: str) -> None:
    assert run(ubl(), vat=vat, company=company).doc_type is DocType.PURCHASE_INVOICE


@pytest.mark.parametrize(
    "customer",
    [
        PartySpec(company=("0208", "0123456749")),
        PartySpec(company=("BE:CBE", "0123.456.749")),
        PartySpec(company=("be:cbe", "0123456749")),
        PartySpec(company=("", "0123456749")),
        PartySpec(endpoint=("0208", "0123456749")),
        PartySpec(endpoint=("9956", "0123456749")),
        PartySpec(endpoint=("9925", "BE0123456749")),
        PartySpec(endpoint=("9925", "0123456749")),
        PartySpec(endpoint=("BE:VAT", "BE0123456749")),
        PartySpec(tax_schemes=(("BE0123456749", ""),)),
    ],
)
def test_customer_found_by_company_number_or_endpoint(customer: PartySpec) -> None:
    found = run(ubl(DocSpec(customer=customer)), vat="BE0123456749")
    assert found.doc_type is DocType.PURCHASE_INVOICE


@pytest.mark.parametrize(
    "customer",
    [
        PartySpec(endpoint=("0088", "0123456749")),
        PartySpec(endpoint=("EM", "0123456749")),
        PartySpec(endpoint=("0007", "0123456749")),
        PartySpec(company=("0007", "0123456749")),
        PartySpec(company=("0183", "BE0123456749")),
        PartySpec(tax_schemes=(("BE0123456749", "TAX"),)),
        PartySpec(tax_schemes=(("BE0123456749", "VA"),)),
        PartySpec(),
    ],
)
def test_identifiers_that_do_not_name_the_company_are_ignored(customer: PartySpec) -> None:
    found = run(ubl(DocSpec(customer=customer)), vat="BE0123456749")
    assert code(found) == "party-mismatch"


def test_endpoint_vat_scheme_supplies_its_country() -> None:
    spec = DocSpec(supplier=PartySpec(endpoint=("9933", "061828591")))
    assert run(ubl(spec), vat="GR061828591").doc_type is DocType.SALES_INVOICE


def test_file_name_and_sender_type_do_not_decide_the_format() -> None:
    found = run(ubl(), vat=CUSTOMER_VAT, name="scan.png", media="image/png")
    assert found.doc_type is DocType.PURCHASE_INVOICE


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (DocSpec(root="CreditNote", type_code="381"), DocType.PURCHASE_CREDIT_NOTE),
        (DocSpec(root="CreditNote", type_code="380"), DocType.PURCHASE_CREDIT_NOTE),
        (DocSpec(type_code="381"), DocType.PURCHASE_CREDIT_NOTE),
        (DocSpec(type_code="261"), DocType.PURCHASE_CREDIT_NOTE),
        (DocSpec(type_code="532"), DocType.PURCHASE_CREDIT_NOTE),
        (DocSpec(payable="-1656.25"), DocType.PURCHASE_CREDIT_NOTE),
        (DocSpec(type_code="384", payable="-1"), DocType.PURCHASE_CREDIT_NOTE),
        (DocSpec(payable="0.00"), DocType.PURCHASE_INVOICE),
        (DocSpec(payable="n/a"), DocType.PURCHASE_INVOICE),
        (DocSpec(root="CreditNote", type_code="381", payable="-484"), DocType.PURCHASE_CREDIT_NOTE),
    ],
)
def test_credit_notes(spec: DocSpec, expected: DocType) -> None:
    assert run(ubl(spec), vat=CUSTOMER_VAT).doc_type is expected


def test_credit_note_on_the_sales_side() -> None:
    found = run(ubl(DocSpec(root="CreditNote", type_code="381")), vat=SUPPLIER_VAT)
    assert found.doc_type is DocType.SALES_CREDIT_NOTE


def test_negative_invoice_keeps_its_declared_kind_in_the_facts() -> None:
    found = run(ubl(DocSpec(payable="-10.00")), vat=CUSTOMER_VAT)
    assert found.facts["kind"] == "invoice"
    assert found.facts["payable_amount"] == "-10.00"
    assert "booked as credit note" in found.reason


def test_facts_are_json_and_as_written() -> None:
    facts = run(ubl(), vat=CUSTOMER_VAT).facts
    assert json.loads(json.dumps(facts)) == facts
    assert facts["syntax"] == "ubl"
    assert facts["issue_date"] == "2024-03-01"
    assert facts["payable_amount"] == "1656.25"
    assert facts["supplier"] == {
        "name": "Supplier",
        "vat": SUPPLIER_VAT,
        "company_number": "",
        "company_scheme": "",
        "endpoint": "",
    }
    assert facts["has_embedded_pdf"] is False


def test_registration_name_when_there_is_no_trading_name() -> None:
    data = ubl().replace(b"<cac:PartyName><cbc:Name>Customer</cbc:Name></cac:PartyName>", b"")
    assert run(data, vat=CUSTOMER_VAT).facts["customer"]["name"] == "Customer NV"


def test_embedded_pdf_is_returned_with_a_plain_name() -> None:
    pdf = b"%PDF-1.4\n%%EOF\n"
    encoded = base64.encodebytes(pdf).decode()
    root = parse_xml(ubl(DocSpec(attachment=encoded)))
    assert read_ubl(root).has_embedded_pdf
    assert embedded_pdf(root) == ("inv_1.pdf", pdf)


@pytest.mark.parametrize("content", ["UERGIFRlc3Q=", "not base64!", "   "])
def test_placeholder_attachment_is_not_a_pdf(content: str) -> None:
    root = parse_xml(ubl(DocSpec(attachment=content)))
    assert not read_ubl(root).has_embedded_pdf
    assert embedded_pdf(root) is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "not-xml"),
        (b"", "not-xml"),
        (random.Random(4711).randbytes(4096), "not-xml"),
        (b"<" + random.Random(42).randbytes(4096), "xml-broken"),
        (ubl()[:700], "xml-broken"),
        (b"<html><body>invoice</body></html>", "unsupported-format"),
        (b'<?xml version="1.0"?>\n<!DOCTYPE Invoice>\n<Invoice/>', "xml-doctype-forbidden"),
    ],
)
def test_unrecognised_content_gets_a_reason_code(data: bytes, expected: str) -> None:
    found = run(data, vat=CUSTOMER_VAT, name="invoice.xml", media="application/xml")
    assert code(found) == expected
    assert found.facts == {}


def test_truncated_xml_names_the_line() -> None:
    reason = run(ubl()[:700], vat=CUSTOMER_VAT).reason
    assert reason.startswith("xml-broken: line ")


def test_not_xml_reason_quotes_what_the_sender_declared() -> None:
    reason = run(b"\x89PNG\r\n", vat=CUSTOMER_VAT, name="scan.pdf", media="application/pdf").reason
    assert reason == (
        "not-xml: content does not start with '<' (declared scan.pdf, application/pdf)"
    )


def test_foreign_root_is_named() -> None:
    cii = b'<rsm:CrossIndustryInvoice xmlns:rsm="urn:x:cii"/>'
    assert run(cii, vat=CUSTOMER_VAT).reason == (
        "unsupported-format: root {urn:x:cii}CrossIndustryInvoice"
    )


def test_ubl_in_a_wrong_namespace_is_not_ubl() -> None:
    data = ubl().replace(f"{UBL}Invoice-2".encode(), b"urn:example:Invoice")
    assert code(run(data, vat=CUSTOMER_VAT)) == "unsupported-format"
