"""The corpus gate: every file of the shared corpus through recognize(), checked and never raising.

expected.csv (UBL and CII) and expected_facturx.csv (hybrid PDFs) give the facts. The bank
statement facts below were read by hand from the files: CODA columns 6-42 of record 1 (the
old-style Belgian account of sample1 turned into its IBAN), camt.053 `Stmt/Acct/Id`, currency
from `Acct/Ccy` or else the first balance.
"""

from __future__ import annotations

import csv
import io
import os
import random
from pathlib import Path

import pytest
from corpus_dir import CORPUS
from pypdf import PdfWriter

from gateway import mime
from gateway.config import MimeSettings
from gateway.rules.columns import COLUMNS, expected_columns
from gateway.rules.recognize import DossierFacts, Options, recognize
from gateway.rules.stage import Envelope, plan
from gateway.rules.xsd import UblSchemas
from gateway.store.models import DocType

STRANGER = DossierFacts("NL000099998B57", "", ("BE71096123456769",))
REASON_CODES = {
    "not-xml",
    "xml-broken",
    "xml-doctype-forbidden",
    "unsupported-format",
    "party-mismatch",
    "dossier-unidentified",
    "account-mismatch",
    "coda-broken",
    "pdf-encrypted",
    "pdf-broken",
    "pdf-no-text",
    "pdf-low-confidence",
}
STATEMENTS = {
    "coda/sample1.cod": ("BE12138536152215", "BE0330158420", "EUR"),
    "coda/sample2.cod": ("BE62354872126588", "BE1568365271", "EUR"),
    "coda/Coda_foreign_account.txt": ("FR1234567890240924002304825", "", "EUR"),
    "coda/Coda_iban_v2_3_multi_statements.txt": ("BE13001676096039", "BE0847615989", "EUR"),
    "coda/Coda_v2_3_single_statement.txt": ("BE86407051416150", "BE0417331909", "EUR"),
    "camt/camt053.v2.with-party-ids.xml": ("NL26VAYB8060476890", "", "EUR"),
    "camt/camt053.v8.xml": ("NL26VAYB8060476890", "", "EUR"),
    "camt/subite_LT6258-camt053_2024-03-12.xml": ("LT625883379695428516", "", "EUR"),
    "camt/subite_account_statement.xml": ("BE86463768548050", "", "EUR"),
    "camt/test-camt053-txdtls.xml": ("CH1111000000123456789", "", "CHF"),
}


def read_csv(name: str) -> list[dict[str, str]]:
    path = CORPUS / name
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix not in {".csv", ".md"})


ROWS = read_csv("expected.csv")
HYBRIDS = read_csv("expected_facturx.csv")
FILES = corpus_files()
STATEMENT_FILES = [p for p in FILES if p.parent.name in ("coda", "camt")]


def run(relative: str, dossier: DossierFacts = STRANGER):  # type: ignore[no-untyped-def]
    path = CORPUS / relative
    return recognize(path.name, "", path.read_bytes(), dossier)


def test_corpus_is_present() -> None:
    if ROWS and HYBRIDS and STATEMENT_FILES:
        return
    message = f"corpus incomplete at {CORPUS} (set GATEWAY_CORPUS to the corpus folder)"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.mark.parametrize("row", ROWS, ids=[row["path"] for row in ROWS])
def test_structured_files_match_expected(row: dict[str, str]) -> None:
    found = run(row["path"])
    assert expected_columns(found.facts) == {key: row[key] for key in COLUMNS}


@pytest.mark.parametrize("row", HYBRIDS, ids=[row["path"] for row in HYBRIDS])
def test_hybrid_pdfs_match_expected(row: dict[str, str]) -> None:
    found = run(row["path"])
    embedded = [] if row["embedded_xml"] == "(none)" else row["embedded_xml"].split(";")
    xml_files = [name for name in found.facts["embedded_files"] if name.endswith(".xml")]
    assert sorted(xml_files) == sorted(embedded)
    if row["kind"] != "invoice":
        assert found.doc_type is None
        assert found.facts["syntax"] == "pdf"
        assert found.reason.split(":")[0] in ("pdf-low-confidence", "pdf-no-text")
        return
    columns = expected_columns(found.facts)
    assert columns["syntax"] == "cii"
    assert {
        "kind": columns["kind"],
        "guideline_id": columns["customization_id"],
        "invoice_number": columns["invoice_number"],
        "issue_date": columns["issue_date"],
        "currency": columns["currency"],
        "seller_vat": columns["supplier_vat"],
        "buyer_vat": columns["customer_vat"],
        "payable_amount": columns["payable_amount"],
        "type_code": found.facts["type_code"],
    } == {
        key: row[key]
        for key in (
            "kind",
            "guideline_id",
            "invoice_number",
            "issue_date",
            "currency",
            "seller_vat",
            "buyer_vat",
            "payable_amount",
            "type_code",
        )
    }


SPLITTABLE = [
    (
        row["path"],
        row.get("supplier_vat") or row["seller_vat"],
        row.get("customer_vat") or row["buyer_vat"],
        row["kind"],
    )
    for row in [r for r in ROWS if r["syntax"] == "cii"]
    + [r for r in HYBRIDS if r["kind"] == "invoice"]
    if (row.get("supplier_vat") or row.get("seller_vat"))
    and (row.get("customer_vat") or row.get("buyer_vat"))
]


@pytest.mark.parametrize(
    ("path", "supplier", "customer", "kind"), SPLITTABLE, ids=[s[0] for s in SPLITTABLE]
)
def test_cii_split_from_either_side(path: str, supplier: str, customer: str, kind: str) -> None:
    credit = kind == "credit-note"
    purchase = run(path, DossierFacts(customer, ""))
    sales = run(path, DossierFacts(supplier, ""))
    assert purchase.doc_type is (
        DocType.PURCHASE_CREDIT_NOTE if credit else DocType.PURCHASE_INVOICE
    ), purchase.reason
    assert sales.doc_type is (DocType.SALES_CREDIT_NOTE if credit else DocType.SALES_INVOICE), (
        sales.reason
    )


STATEMENT_ROWS = sorted(STATEMENTS) if STATEMENT_FILES else []


@pytest.mark.parametrize("relative", STATEMENT_ROWS, ids=STATEMENT_ROWS)
def test_statement_facts(relative: str) -> None:
    account, holder, currency = STATEMENTS[relative]
    facts = run(relative).facts
    assert facts["kind"] == "bank-statement"
    assert facts["accounts"][0] == account
    assert facts["holder"]["company_number"].split(", ")[0] == holder
    assert facts["currency"] == currency


@pytest.mark.parametrize("path", STATEMENT_FILES, ids=[p.name for p in STATEMENT_FILES])
def test_statements_belong_by_account_or_holder(path: Path) -> None:
    relative = str(path.relative_to(CORPUS))
    stranger = run(relative)
    if stranger.reason.startswith("coda-broken"):
        assert path.name == "Coda_faulty_version.txt"
        return
    assert stranger.doc_type is None
    assert stranger.reason.startswith("account-mismatch:")
    accounts = stranger.facts["accounts"]
    by_iban = run(relative, DossierFacts("", "", (" ".join(accounts[-1].lower()),)))
    assert by_iban.doc_type is DocType.BANK_STATEMENT, by_iban.reason
    holder = stranger.facts["holder"]["company_number"]
    if holder:
        by_holder = run(relative, DossierFacts(holder.split(", ")[0], ""))
        assert by_holder.doc_type is DocType.BANK_STATEMENT, by_holder.reason


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(CORPUS)) for p in FILES])
def test_every_corpus_file_gets_an_answer(path: Path) -> None:
    """Anything a mail can carry gets a decision with a known reason code, never an exception."""
    found = recognize(path.name, "", path.read_bytes(), STRANGER)
    assert found.doc_type is None
    assert found.reason.split(":", 1)[0] in REASON_CODES
    assert found.facts.get("syntax", "") in ("", "ubl", "cii", "coda", "camt", "pdf")


# SOURCES.md names the UBL ones as declaring an application/pdf attachment that is no PDF
# (a "PDF Test" string, a short placeholder, or an empty element); the two CII examples carry
# "EHF.pdf" as a truncated base64-of-base64 string ending in "...", read by hand.
PLACEHOLDERS = {
    "en16931-cii/CII_example2.xml",
    "en16931-cii/CII_example5.xml",
    "efff/efff3.0.0_UBLBE_BE0000000196_V01-15000001.xml",
    "efff/efff3.0.0_UBLBE_BE0000000196_V01-15000002.xml",
    "efff/v1_UBLBE_BE0000000196_V01-15000002.xml",
    "en16931-ubl/ubl-tc434-example2.xml",
    "en16931-ubl/ubl-tc434-example5.xml",
    "en16931-ubl/ubl-tc434-test-1.xml",
}


@pytest.mark.parametrize("row", ROWS, ids=[row["path"] for row in ROWS])
def test_embedded_pdf_is_the_visual_and_placeholders_are_flagged(row: dict[str, str]) -> None:
    found = run(row["path"])
    assert (found.visual is not None) == (row["has_embedded_pdf"] == "true")
    if found.visual is not None:
        assert found.visual.data.startswith(b"%PDF-")
        assert found.visual.filename.endswith(".pdf")
    assert found.facts["pdf_placeholder"] == (row["path"] in PLACEHOLDERS)


XSD_DIR = CORPUS / "ubl-xsd"
# SOURCES.md: every UBL file of the corpus validates except these two (upstream element order).
XSD_INVALID = {
    "peppol-bis3/GR-base-example-correct.xml",
    "peppol-bis3/GR-base-example-TaxRepresentative.xml",
}
UBL_ROWS = [row for row in ROWS if row["syntax"] == "ubl"]


@pytest.fixture(scope="module")
def schema_options() -> Options:
    if not (XSD_DIR / "maindoc").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the UBL schemas are missing at {XSD_DIR}", pytrace=False)
        pytest.skip(f"no UBL schemas at {XSD_DIR}")
    return Options(ubl_schemas=UblSchemas.load(XSD_DIR))


@pytest.mark.parametrize("row", UBL_ROWS, ids=[row["path"] for row in UBL_ROWS])
def test_xsd_check_flags_only_the_invalid_files(
    row: dict[str, str], schema_options: Options
) -> None:
    path = CORPUS / row["path"]
    found = recognize(path.name, "", path.read_bytes(), STRANGER, schema_options)
    invalid = row["path"] in XSD_INVALID
    assert found.facts["xsd_valid"] is not invalid
    assert bool(found.facts["xsd_errors"]) is invalid
    assert ("fails the UBL 2.1 schema" in found.reason) is invalid
    if invalid:
        assert "cac:AdditionalDocumentReference': This element is not expected" in found.reason
        assert found.facts["number"] == row["invoice_number"]


EMLS = [p for p in FILES if p.suffix == ".eml"]


@pytest.mark.parametrize("path", EMLS, ids=[p.name for p in EMLS])
def test_every_corpus_mail_is_taken_apart_and_decided(path: Path) -> None:
    """As the daemon does: parts out of the message, then the whole stage, without raising."""
    try:
        parts = mime.extract(path.read_bytes(), MimeSettings()).parts
    except mime.Quarantine:
        return  # kept aside whole by the daemon; test_eml_corpus says which mails and why
    planned = plan(parts, STRANGER, [], Envelope("", ("a@b.example",), ""), Options())
    assert len(planned) <= len(parts)
    for item in planned:
        assert item.found.reason.split(":", 1)[0] in REASON_CODES, item.found.reason


# The corpus's PDFs without invoice XML, read as text for their own seller (DE136695976 is
# printed in their footers; no label says on which side) and the Order-X for its buyer.
PLAIN_PDFS = [
    ("facturx/MustangGnuaccountingBeispielRE-20201121_508blanko.pdf", "DE136695976", "invoice"),
    ("facturx/corruptedV2PDF.pdf", "DE136695976", "invoice"),
    ("facturx/ORDER-X_EX01_ORDER_FULL_DATA-COMFORT.pdf", "FR32123456789", ""),
]


@pytest.mark.parametrize(("relative", "vat", "kind"), PLAIN_PDFS if HYBRIDS else [])
def test_plain_pdfs_are_read_but_never_guessed(relative: str, vat: str, kind: str) -> None:
    found = run(relative, DossierFacts(vat, ""))
    assert found.doc_type is None
    assert found.reason.startswith("pdf-low-confidence: ")
    assert found.facts["kind"] == kind
    assert f"dossier number {vat}" in found.facts["evidence"]


def test_xsd_check_covers_ubl_inside_a_pdf(schema_options: Options) -> None:
    """An XRechnung-style hybrid: a UBL embedded in a PDF is checked like a bare one."""
    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    ubl = (CORPUS / "peppol-bis3" / "GR-base-example-correct.xml").read_bytes()
    writer.add_attachment("xrechnung.xml", ubl)
    out = io.BytesIO()
    writer.write(out)
    found = recognize("x.pdf", "", out.getvalue(), STRANGER, schema_options)
    assert found.facts["embedded_xml"] == "xrechnung.xml"
    assert found.facts["syntax"] == "ubl"
    assert found.facts["xsd_valid"] is False


MUTATED = [
    "peppol-bis3/base-example.xml",
    "en16931-cii/CII_example1.xml",
    "facturx/Facture_FR_BASIC.pdf",
    "facturx/MustangGnuaccountingBeispielRE-20201121_508blanko.pdf",
    "coda/sample1.cod",
    "camt/camt053.v8.xml",
]


@pytest.mark.parametrize("relative", MUTATED if ROWS else [])
def test_damaged_copies_never_raise(relative: str) -> None:
    """Truncated and byte-flipped copies (fixed seed): every one gets an answer, no exception."""
    original = (CORPUS / relative).read_bytes()
    rng = random.Random(relative)
    for _ in range(40):
        data = bytearray(original[: rng.randrange(1, len(original) + 1)])
        for _ in range(rng.randrange(1, 40)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        found = recognize("x", "", bytes(data), STRANGER)
        assert found.reason.split(":", 1)[0] in REASON_CODES | {
            "purchase",
            "sales",
            "bank statement",
        }
