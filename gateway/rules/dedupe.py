"""The identity of a document beyond its bytes: the same invoice sent again as another file.

A re-sent invoice is a new PDF export, a Factur-X after the UBL, a forward with a different
signature; its file hash differs, yet booking it twice is the one mistake an accountant cannot
afford. Invoices are identified by supplier (VAT, else company number, else endpoint), number
and type; bank statements by account, number and date. No key means no such duplicate check:
without a supplier or a number two documents are never assumed the same.
"""

from __future__ import annotations

from typing import Any

from gateway.rules.statement import normalize_account
from gateway.rules.vat import normalize_vat
from gateway.store.models import DocType


def dedupe_key(doc_type: DocType | None, facts: dict[str, Any]) -> str:
    if doc_type is None:
        return ""
    number = str(facts.get("number", "")).strip()
    if not number:
        return ""
    if doc_type is DocType.BANK_STATEMENT:
        accounts = facts.get("accounts") or []
        if not accounts:
            return ""
        account = normalize_account(str(accounts[0]))
        return f"{doc_type.value}|{account}|{number}|{facts.get('issue_date', '')}"[:300]
    supplier = facts.get("supplier") or {}
    party = next(
        (
            normalize_vat(str(supplier.get(key, "")))
            for key in ("vat", "company_number", "endpoint")
            if str(supplier.get(key, "")).strip()
        ),
        "",
    )
    return f"{doc_type.value}|{party}|{number}"[:300] if party else ""
