"""A UBL 2.1 Invoice or CreditNote read into `InvoiceInput`: lines, VAT, accounts, totals.

Recognition keeps only the facts it needs to route a document; booking needs every line, so it
reads them here from the stored bytes, with the same safe parser.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation

from lxml import etree

from gateway.booking.invoice import (
    Counterparty,
    InvoiceInput,
    InvoiceLine,
    TaxKey,
    UnreadableInvoice,
)
from gateway.rules.facts import CREDIT_TYPE_CODES
from gateway.rules.ubl import CREDIT_NOTE, NS, NotUbl, read_ubl
from gateway.rules.xmlsafe import parse_xml


def invoice_from_ubl(data: bytes) -> InvoiceInput:
    """Read `data`; raise `UnreadableInvoice` naming what is missing or malformed."""
    return ubl_invoice(parse_xml(data))


def ubl_invoice(root: etree._Element) -> InvoiceInput:
    try:
        facts = read_ubl(root)
    except NotUbl as exc:
        raise UnreadableInvoice(str(exc)) from exc
    credit_root = root.tag == CREDIT_NOTE
    credit = credit_root or facts.type_code in CREDIT_TYPE_CODES
    sign = Decimal(-1) if credit else Decimal(1)
    line_tag = "cac:CreditNoteLine" if credit_root else "cac:InvoiceLine"
    default_account = _text(root, "cbc:AccountingCost")
    lines = [_line(el, sign, default_account) for el in root.iterfind(line_tag, NS)]
    lines += [_allowance_charge(el, sign) for el in root.iterfind("cac:AllowanceCharge", NS)]
    if not lines:
        raise UnreadableInvoice("the document has no invoice lines")
    totals = root.find("cac:LegalMonetaryTotal", NS)
    if totals is None:
        raise UnreadableInvoice("the document has no LegalMonetaryTotal")
    return InvoiceInput(
        credit_note=credit,
        number=facts.number,
        issue_date=_date(facts.issue_date),
        currency=facts.currency,
        supplier=_counterparty(root, "cac:AccountingSupplierParty"),
        customer=_counterparty(root, "cac:AccountingCustomerParty"),
        lines=tuple(lines),
        untaxed=sign * _amount(totals, "cbc:TaxExclusiveAmount"),
        tax=sign * _tax_amount(root, facts.currency),
        total=sign * _total(totals),
    )


def _line(el: etree._Element, sign: Decimal, default_account: str) -> InvoiceLine:
    item = el.find("cac:Item", NS)
    description = ""
    if item is not None:
        description = _text(item, "cbc:Name") or _text(item, "cbc:Description")
    return InvoiceLine(
        description=description or f"line {_text(el, 'cbc:ID')}",
        amount=sign * _amount(el, "cbc:LineExtensionAmount"),
        tax=_line_tax(el),
        account=_text(el, "cbc:AccountingCost") or default_account,
    )


def _line_tax(el: etree._Element) -> TaxKey:
    """The line's VAT category; older eFFF files only have it in the line's own TaxTotal,
    with the percent on the subtotal."""
    classified = el.find("cac:Item/cac:ClassifiedTaxCategory", NS)
    if classified is not None:
        return _tax_key(classified)
    subtotal = el.find("cac:TaxTotal/cac:TaxSubtotal", NS)
    if subtotal is None:
        raise UnreadableInvoice(f"line {_text(el, 'cbc:ID')} has no VAT category")
    return _tax_key(subtotal.find("cac:TaxCategory", NS), _text(subtotal, "cbc:Percent"))


def _allowance_charge(el: etree._Element, sign: Decimal) -> InvoiceLine:
    """A document-level allowance (negative) or charge (positive) as a line of its own."""
    charge = _text(el, "cbc:ChargeIndicator").lower() == "true"
    reason = _text(el, "cbc:AllowanceChargeReason") or ("charge" if charge else "allowance")
    amount = _amount(el, "cbc:Amount")
    return InvoiceLine(
        description=reason,
        amount=sign * (amount if charge else -amount),
        allowance=not charge,
        tax=_tax_key(el.find("cac:TaxCategory", NS)),
    )


def _tax_key(category: etree._Element | None, percent: str = "") -> TaxKey:
    if category is None:
        raise UnreadableInvoice("an allowance or charge has no VAT category")
    code = _text(category, "cbc:ID").upper()
    if not code:
        raise UnreadableInvoice("a VAT category has no code")
    percent = _text(category, "cbc:Percent") or percent
    return TaxKey(code, decimal(percent, "VAT percent") if percent else Decimal(0))


def _tax_amount(root: etree._Element, currency: str) -> Decimal:
    """The VAT in the document currency: the TaxTotal with subtotals, not the accounting copy."""
    for total in root.iterfind("cac:TaxTotal", NS):
        amount = total.find("cbc:TaxAmount", NS)
        if amount is None:
            continue
        if total.find("cac:TaxSubtotal", NS) is not None or amount.get("currencyID") == currency:
            return decimal(amount.text or "", "TaxAmount")
    return Decimal(0)


def _total(totals: etree._Element) -> Decimal:
    """What the package's invoice total must equal: the amount including VAT, before
    prepayments and cash rounding."""
    inclusive = _text(totals, "cbc:TaxInclusiveAmount")
    if inclusive:
        return decimal(inclusive, "TaxInclusiveAmount")
    payable = _amount(totals, "cbc:PayableAmount")
    prepaid = decimal(_text(totals, "cbc:PrepaidAmount") or "0", "PrepaidAmount")
    rounding = decimal(_text(totals, "cbc:PayableRoundingAmount") or "0", "PayableRoundingAmount")
    return payable + prepaid - rounding


def _counterparty(root: etree._Element, role: str) -> Counterparty:
    wrapper = root.find(role, NS)
    party = wrapper.find("cac:Party", NS) if wrapper is not None else None
    if wrapper is None or party is None:
        return Counterparty(name="")
    vat = ""
    for scheme in party.iterfind("cac:PartyTaxScheme", NS):
        if _text(scheme, "cac:TaxScheme/cbc:ID").upper() in ("VAT", ""):
            vat = vat or _text(scheme, "cbc:CompanyID")
    address = party.find("cac:PostalAddress", NS)
    return Counterparty(
        name=_text(party, "cac:PartyLegalEntity/cbc:RegistrationName")
        or _text(party, "cac:PartyName/cbc:Name"),
        vat=vat,
        company_number=_text(party, "cac:PartyLegalEntity/cbc:CompanyID"),
        auxiliary_account=_text(wrapper, "cbc:CustomerAssignedAccountID")
        if role == "cac:AccountingSupplierParty"
        else _text(wrapper, "cbc:SupplierAssignedAccountID"),
        street=_text(address, "cbc:StreetName") if address is not None else "",
        postal_code=_text(address, "cbc:PostalZone") if address is not None else "",
        city=_text(address, "cbc:CityName") if address is not None else "",
        country=_text(address, "cac:Country/cbc:IdentificationCode").upper()
        if address is not None
        else "",
    )


def _amount(el: etree._Element, path: str) -> Decimal:
    text = _text(el, path)
    if not text:
        raise UnreadableInvoice(f"{path.split(':')[-1]} is missing")
    return decimal(text, path.split(":")[-1])


def decimal(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise UnreadableInvoice(f"{what} {text!r} is not a number") from None
    if not value.is_finite():
        raise UnreadableInvoice(f"{what} {text!r} is not a number")
    return value


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UnreadableInvoice(f"IssueDate {text!r} is not a date") from None


def _text(el: etree._Element, path: str) -> str:
    return (el.findtext(path, namespaces=NS) or "").strip()
