"""The invoice-to-entry mapping of seed 003: what the office decided, checked like the config.

An integration carries a `mapping` table; a dossier may override any key of it (tables such as
`purchase_vat` are merged key by key). `plan_invoice` is pure: an `InvoiceInput` and a mapping
in, the entry to book out, or a `BookingRefused` carrying the seed's error code.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.booking.invoice import Counterparty, InvoiceInput, InvoiceLine
from gateway.config import ConfigError, read_table

LABELS = ("party_then_description", "party", "party_and_description", "party_and_number")
SCOPES = ("both", "purchase", "sales")
MODES = ("e-document", "mapped")
DOC_TYPES = ("purchase_invoice", "purchase_credit_note", "sales_invoice", "sales_credit_note")
TABLES = ("purchase_vat", "sales_vat", "journals")
VAT_KEY = re.compile(r"^[A-Z]{1,2}:\d+(\.\d+)?$")
DEFAULT_JOURNALS = {
    "purchase_invoice": "EXP",
    "purchase_credit_note": "EXP",
    "sales_invoice": "REV",
    "sales_credit_note": "REV",
}

TAX_RATE_NOT_FOUND = "ERROR_SYNC_INVOICE_MAPPING_TAX_RATE_NOT_FOUND"
JOURNAL_NOT_FOUND = "ERROR_SYNC_INVOICE_MAPPING_JOURNAL_NOT_FOUND"
ACCOUNT_NOT_FOUND = "ERROR_SYNC_INVOICE_ACCOUNT_NUMBER_NOT_FOUND"
ACCOUNT_NOT_ACTIVE = "ERROR_SYNC_INVOICE_ACCOUNT_NUMBER_NOT_ACTIVE"
AMOUNT_VALIDATION = "ERROR_SYNC_INVOICE_AMOUNT_VALIDATION"
LINE_VALIDATION = "ERROR_SYNC_INVOICE_LINE_VALIDATION"
PARTNER_VALIDATION = "ERROR_SYNC_INVOICE_PARTNER_VALIDATION"
PARTNER_NOT_FOUND = "ERROR_SYNC_INVOICE_PARTNER_NOT_FOUND"
PDF_MISSING = "ERROR_SYNC_INVOICE_PDF"


class BookingRefused(Exception):
    """The document cannot be booked as mapped; `rejected` False means our own setup is wrong."""

    def __init__(self, code: str, text: str, rejected: bool = True) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text
        self.rejected = rejected


def _one_of(choices: tuple[str, ...]) -> Any:
    return {"check": lambda v: v in choices, "expected": "one of " + ", ".join(choices)}


def _decimal_text(value: str) -> bool:
    try:
        return Decimal(value) >= 0
    except InvalidOperation:
        return False


def _iso_date(value: str) -> bool:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return value == ""
    return True


@dataclass(frozen=True)
class Mapping:
    mode: str = field(default="e-document", metadata=_one_of(MODES))
    purchase_vat: dict[str, str] = field(default_factory=dict)
    sales_vat: dict[str, str] = field(default_factory=dict)
    purchase_rounding_tax: str = ""
    sales_rounding_tax: str = ""
    journals: dict[str, str] = field(default_factory=dict)
    purchase_account: str = ""
    sales_account: str = ""
    # Document-level discounts on their own account ("" = deducted from the lines' account).
    purchase_discount_account: str = ""
    sales_discount_account: str = ""
    supplier_account: str = ""
    customer_account: str = ""
    debit_rounding_account: str = ""
    credit_rounding_account: str = ""
    rounding_tolerance: str = field(
        default="0.05", metadata={"check": _decimal_text, "expected": "an amount such as 0.05"}
    )
    start_date: str = field(
        default="", metadata={"check": _iso_date, "expected": "a date YYYY-MM-DD or empty"}
    )
    post: bool = False
    without_attachment: bool = True
    scope: str = field(default="both", metadata=_one_of(SCOPES))
    label: str = field(default="party_then_description", metadata=_one_of(LABELS))

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def journal(self, doc_type: str) -> str:
        return self.journals.get(doc_type) or DEFAULT_JOURNALS[doc_type]


def parse_mapping(table: Any, source: str, prefix: str = "mapping.") -> Mapping:
    """A checked `Mapping`; errors name the key the way the config does."""
    if not isinstance(table, dict):
        raise ConfigError(source, prefix.rstrip("."), "expected a table")
    scalars = {k: v for k, v in table.items() if k not in TABLES}
    mapping = read_table(Mapping, scalars, source, prefix)
    tables = {name: _table(table.get(name, {}), name, source, prefix) for name in TABLES}
    return Mapping(**{**mapping.as_json(), **tables})


def _table(raw: Any, name: str, source: str, prefix: str) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise ConfigError(source, prefix + name, "expected a table of strings")
    for key, value in raw.items():
        where = f"{prefix}{name}.{key}"
        if not isinstance(value, str) or not value:
            raise ConfigError(source, where, f"expected a non-empty string, got {value!r}")
        if name == "journals" and key not in DOC_TYPES:
            raise ConfigError(source, where, "expected one of " + ", ".join(DOC_TYPES))
        if name != "journals" and not VAT_KEY.match(key):
            raise ConfigError(source, where, "expected a VAT key CATEGORY:RATE such as S:21")
    return dict(raw)


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """The dossier's override on top of the integration's mapping, tables key by key."""
    result = dict(base)
    for key, value in override.items():
        if key in TABLES and isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = {**result[key], **value}
        else:
            result[key] = value
    return result


@dataclass(frozen=True)
class PlannedLine:
    description: str
    amount: Decimal
    tax: str
    # Account codes to try in order: the document's own, then the mapped default.
    accounts: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    invoice_type: str  # Tryton's `in` (purchase) or `out` (sales)
    party: Counterparty
    journal: str
    collective_account: str
    description: str
    reference: str
    invoice_date: dt.date
    currency: str
    lines: tuple[PlannedLine, ...]
    total: Decimal
    tax: Decimal
    tolerance: Decimal


def rounding_account(mapping: Mapping, invoice_type: str, difference: Decimal) -> str:
    """A positive difference adds to what is owed: an expense on a purchase (`in`), income on
    a sale; the debit or credit rounding account follows from that."""
    debit = (difference > 0) == (invoice_type == "in")
    return mapping.debit_rounding_account if debit else mapping.credit_rounding_account


def rounding_tax(mapping: Mapping, invoice_type: str) -> str:
    return mapping.purchase_rounding_tax if invoice_type == "in" else mapping.sales_rounding_tax


def admit(invoice: InvoiceInput, doc_type: str, mapping: Mapping, has_pdf: bool) -> None:
    """The office's options that keep a document out of the package, in either mode:
    scope, synchronisation start date, and waiting for a PDF. These are our own settings, so
    the delivery fails (not rejected) and can be sent again once they change."""
    if doc_type not in DOC_TYPES:
        raise BookingRefused("not-an-invoice", f"a {doc_type} is not booked as an invoice", False)
    side = "purchase" if doc_type.startswith("purchase") else "sales"
    if mapping.scope not in ("both", side):
        raise BookingRefused("out-of-scope", f"mapping scope is {mapping.scope} only", False)
    if mapping.start_date and invoice.issue_date < dt.date.fromisoformat(mapping.start_date):
        raise BookingRefused(
            "before-start-date",
            f"issued {invoice.issue_date} before the synchronisation start {mapping.start_date}",
            False,
        )
    if not has_pdf and not mapping.without_attachment:
        raise BookingRefused(
            PDF_MISSING, "the document carries no PDF and the mapping waits for one", False
        )


def plan_invoice(invoice: InvoiceInput, doc_type: str, mapping: Mapping) -> Plan:
    """The entry for `invoice` booked as `doc_type` (already admitted); `BookingRefused` if
    the mapping lacks a piece."""
    purchase = doc_type.startswith("purchase")
    side = "purchase" if purchase else "sales"
    party = invoice.supplier if purchase else invoice.customer
    vat_table = mapping.purchase_vat if purchase else mapping.sales_vat
    default_account = mapping.purchase_account if purchase else mapping.sales_account
    discount_account = (
        mapping.purchase_discount_account if purchase else mapping.sales_discount_account
    )
    lines = tuple(
        PlannedLine(
            description=_label(mapping.label, party.name, line.description, invoice.number),
            amount=line.amount,
            tax=_tax(vat_table, line, side),
            accounts=_accounts(line, default_account, discount_account),
        )
        for line in invoice.lines
    )
    return Plan(
        invoice_type="in" if purchase else "out",
        party=party,
        journal=mapping.journal(doc_type),
        collective_account=mapping.supplier_account if purchase else mapping.customer_account,
        description=_label(mapping.label, party.name, "", invoice.number),
        reference=invoice.number,
        invoice_date=invoice.issue_date,
        currency=invoice.currency,
        lines=lines,
        total=invoice.total,
        tax=invoice.tax,
        tolerance=Decimal(mapping.rounding_tolerance),
    )


def _accounts(line: InvoiceLine, default: str, discount: str) -> tuple[str, ...]:
    """The line's own account, then the default; a discount goes to the discount account
    when the office keeps discounts apart."""
    first = discount if line.allowance and discount else line.account
    return tuple(dict.fromkeys(a for a in (first, default) if a))


def _tax(table: dict[str, str], line: InvoiceLine, side: str) -> str:
    key = str(line.tax)
    if key not in table:
        raise BookingRefused(
            TAX_RATE_NOT_FOUND,
            f"VAT {key} of line {line.description!r} has no {side} tax code in the mapping"
            f" ({side}_vat.{key})",
        )
    return table[key]


def _label(style: str, party: str, description: str, number: str) -> str:
    """The four label styles of the seed; an empty description means the party's own line."""
    if style == "party":
        return party
    if style == "party_and_description":
        return f"{party} - {description}" if description else party
    if style == "party_and_number":
        return f"{party} - {number}"
    return description or party
