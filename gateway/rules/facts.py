"""The facts recognition reads from a document, shared by every syntax that carries them.

UBL and CII name the same things differently; once read, an invoice is an invoice and the
purchase/sales split, duplicate detection and the rules engine look at these values only.
Values stay the strings the sender wrote, so what we store can be found again in the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

Kind = Literal["invoice", "credit-note"]
Syntax = Literal["ubl", "cii"]

# UNTDID 1001 codes EN 16931 accepts for credit notes; an Invoice root may carry them too.
CREDIT_TYPE_CODES = frozenset(
    {"81", "83", "261", "262", "296", "308", "381", "396", "420", "458", "532"}
)


@dataclass(frozen=True)
class SchemedId:
    """An identifier and the scheme that gives it meaning (EAS/ICD code such as 0208)."""

    scheme: str
    value: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.value}" if self.scheme else self.value


@dataclass(frozen=True)
class Party:
    name: str
    vat: str
    company: SchemedId | None
    endpoint: SchemedId | None

    def as_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "vat": self.vat,
            "company_number": self.company.value if self.company else "",
            "company_scheme": self.company.scheme if self.company else "",
            "endpoint": str(self.endpoint) if self.endpoint else "",
        }


NO_PARTY = Party(name="", vat="", company=None, endpoint=None)


@dataclass(frozen=True)
class InvoiceFacts:
    customization_id: str
    profile_id: str
    type_code: str
    kind: Kind
    number: str
    issue_date: str
    currency: str
    payable_amount: str
    supplier: Party
    customer: Party
    has_embedded_pdf: bool
    syntax: Syntax = "ubl"
    # A declared PDF attachment whose content is not a PDF (a test string, an empty element).
    pdf_placeholder: bool = False
    # The embedded PDF itself (file name, bytes): the document's visual, not a stored fact.
    pdf: tuple[str, bytes] | None = field(default=None, repr=False, compare=False)

    def as_json(self) -> dict[str, Any]:
        """The facts as stored on the document row (JSON column), parties nested."""
        return {
            "syntax": self.syntax,
            "customization_id": self.customization_id,
            "profile_id": self.profile_id,
            "type_code": self.type_code,
            "kind": self.kind,
            "number": self.number,
            "issue_date": self.issue_date,
            "currency": self.currency,
            "payable_amount": self.payable_amount,
            "supplier": self.supplier.as_json(),
            "customer": self.customer.as_json(),
            "has_embedded_pdf": self.has_embedded_pdf,
            "pdf_placeholder": self.pdf_placeholder,
        }


_BASIC_DATE = re.compile(r"\d{8}")


def iso_date(text: str) -> str:
    """The calendar day as YYYY-MM-DD; xs:date may carry a zone (`2018-04-09Z`), CII format
    102 is YYYYMMDD. Anything else is kept as written rather than guessed at."""
    text = text.strip()
    if _BASIC_DATE.fullmatch(text):
        text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
    try:
        return date.fromisoformat(text[:10]).isoformat()
    except ValueError:
        return text
