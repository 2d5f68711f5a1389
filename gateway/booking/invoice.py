"""The invoice as a package books it, whatever syntax it came in (UBL now, CII later).

Amounts are signed for booking: a credit note's lines and totals are negative, so a reader
fills these values once and every mapping and check downstream works on one convention.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal


class UnreadableInvoice(ValueError):
    """The document lacks what booking needs (a line, a total, a date); the text says which."""


@dataclass(frozen=True)
class TaxKey:
    """A VAT category (UNCL 5305: S, Z, E, AE, K, G, O, L, M) and its rate in percent."""

    category: str
    rate: Decimal

    def __str__(self) -> str:
        """The mapping key: `S:21`, `S:6`, `AE:0` (rate without trailing zeros)."""
        return f"{self.category}:{self.rate.normalize():f}"


@dataclass(frozen=True)
class InvoiceLine:
    description: str
    amount: Decimal
    tax: TaxKey
    account: str = ""
    # A document-level allowance (discount, rebate); line-level ones are already in `amount`.
    allowance: bool = False


@dataclass(frozen=True)
class Counterparty:
    name: str
    vat: str = ""
    company_number: str = ""
    auxiliary_account: str = ""
    street: str = ""
    postal_code: str = ""
    city: str = ""
    country: str = ""


@dataclass(frozen=True)
class InvoiceInput:
    credit_note: bool
    number: str
    issue_date: dt.date
    currency: str
    supplier: Counterparty
    customer: Counterparty
    lines: tuple[InvoiceLine, ...]
    untaxed: Decimal
    tax: Decimal
    total: Decimal

    @property
    def lines_total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))
