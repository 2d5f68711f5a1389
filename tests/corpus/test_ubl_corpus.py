"""The UBL reader and recognize() against every UBL row of the shared corpus's expected.csv."""

from __future__ import annotations

import csv
import os

import pytest
from corpus_dir import CORPUS

from gateway.rules.recognize import DossierFacts, recognize
from gateway.rules.ubl import embedded_pdf, read_ubl
from gateway.rules.xmlsafe import parse_xml
from gateway.store.models import DocType

EXPECTED = CORPUS / "expected.csv"


def ubl_rows() -> list[dict[str, str]]:
    if not EXPECTED.is_file():
        return []
    with EXPECTED.open(newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if row["syntax"] == "ubl"]


ROWS = ubl_rows()
UBL_PATHS = {row["path"] for row in ROWS}
BOTH_SIDES = [
    row
    for row in ROWS
    if row["supplier_vat"] and row["customer_vat"] and row["supplier_vat"] != row["customer_vat"]
]


def test_corpus_is_present() -> None:
    """Without the corpus the tests below collect nothing; on CI that is a failure."""
    if ROWS:
        return
    message = f"no UBL rows in {EXPECTED} (set GATEWAY_CORPUS to the corpus folder)"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.mark.parametrize("row", ROWS, ids=[row["path"] for row in ROWS])
def test_facts_match_expected(row: dict[str, str]) -> None:
    facts = read_ubl(parse_xml((CORPUS / row["path"]).read_bytes())).as_json()
    found = {
        "kind": facts["kind"],
        "customization_id": facts["customization_id"],
        "invoice_number": facts["number"],
        "issue_date": facts["issue_date"],
        "currency": facts["currency"],
        "supplier_vat": facts["supplier"]["vat"],
        "supplier_endpoint": facts["supplier"]["endpoint"],
        "customer_vat": facts["customer"]["vat"],
        "customer_endpoint": facts["customer"]["endpoint"],
        "payable_amount": facts["payable_amount"],
        "has_embedded_pdf": str(facts["has_embedded_pdf"]).lower(),
    }
    assert found == {key: row[key] for key in found}


@pytest.mark.parametrize("row", ROWS, ids=[row["path"] for row in ROWS])
def test_embedded_pdf_agrees_with_the_flag(row: dict[str, str]) -> None:
    attachment = embedded_pdf(parse_xml((CORPUS / row["path"]).read_bytes()))
    assert (attachment is not None) == (row["has_embedded_pdf"] == "true")
    if attachment is not None:
        name, content = attachment
        assert name.endswith(".pdf")
        assert "/" not in name
        assert content.startswith(b"%PDF-")


@pytest.mark.parametrize("row", BOTH_SIDES, ids=[row["path"] for row in BOTH_SIDES])
def test_recognised_from_either_side(row: dict[str, str]) -> None:
    data = (CORPUS / row["path"]).read_bytes()
    credit = row["kind"] == "credit-note" or row["payable_amount"].startswith("-")
    purchase = recognize(
        row["path"], "application/xml", data, DossierFacts(row["customer_vat"], "")
    )
    sales = recognize(row["path"], "application/xml", data, DossierFacts(row["supplier_vat"], ""))
    assert purchase.doc_type is (
        DocType.PURCHASE_CREDIT_NOTE if credit else DocType.PURCHASE_INVOICE
    ), purchase.reason
    assert sales.doc_type is (DocType.SALES_CREDIT_NOTE if credit else DocType.SALES_INVOICE), (
        sales.reason
    )
