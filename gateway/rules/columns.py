"""Extracted facts under the flat column names of the corpus's expected.csv.

One vocabulary for people and scripts: `gateway rules test --json` prints these, the corpus
gate compares them, and an accountant's spreadsheet of expectations can use them unchanged.
"""

from __future__ import annotations

from typing import Any

COLUMNS = (
    "kind",
    "syntax",
    "customization_id",
    "invoice_number",
    "issue_date",
    "currency",
    "supplier_vat",
    "supplier_endpoint",
    "customer_vat",
    "customer_endpoint",
    "payable_amount",
    "has_embedded_pdf",
)


def expected_columns(facts: dict[str, Any]) -> dict[str, str]:
    supplier = facts.get("supplier") or {}
    customer = facts.get("customer") or {}
    flag = facts.get("has_embedded_pdf")
    return {
        "kind": str(facts.get("kind", "")),
        "syntax": str(facts.get("syntax", "")),
        "customization_id": str(facts.get("customization_id", "")),
        "invoice_number": str(facts.get("number", "")),
        "issue_date": str(facts.get("issue_date", "")),
        "currency": str(facts.get("currency", "")),
        "supplier_vat": str(supplier.get("vat", "")),
        "supplier_endpoint": str(supplier.get("endpoint", "")),
        "customer_vat": str(customer.get("vat", "")),
        "customer_endpoint": str(customer.get("endpoint", "")),
        "payable_amount": str(facts.get("payable_amount", "")),
        "has_embedded_pdf": "" if flag is None else str(bool(flag)).lower(),
    }
