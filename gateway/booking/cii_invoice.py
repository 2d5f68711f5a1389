"""A UN/CEFACT CII invoice (EN 16931, the XML inside Factur-X/ZUGFeRD) read into
`InvoiceInput`, so mapped-entry mode books it the same way as UBL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from lxml import etree

from gateway.booking.invoice import (
    Counterparty,
    InvoiceInput,
    InvoiceLine,
    TaxKey,
    UnreadableInvoice,
)
from gateway.booking.ubl_invoice import decimal
from gateway.rules.facts import CREDIT_TYPE_CODES

_STD = "urn:un:unece:uncefact:data:standard:"
CII_ROOT = f"{{{_STD}CrossIndustryInvoice:100}}CrossIndustryInvoice"
NS = {
    "rsm": f"{_STD}CrossIndustryInvoice:100",
    "ram": f"{_STD}ReusableAggregateBusinessInformationEntity:100",
    "udt": f"{_STD}UnqualifiedDataType:100",
}
_TRADE = "rsm:SupplyChainTradeTransaction"
_SETTLEMENT = f"{_TRADE}/ram:ApplicableHeaderTradeSettlement"
_AGREEMENT = f"{_TRADE}/ram:ApplicableHeaderTradeAgreement"
_ACCOUNT = "ram:ReceivableSpecifiedTradeAccountingAccount/ram:ID"


def invoice_from_cii(root: etree._Element) -> InvoiceInput:
    if root.tag != CII_ROOT:
        raise UnreadableInvoice(f"root {root.tag} is not a CII CrossIndustryInvoice")
    type_code = _text(root, "rsm:ExchangedDocument/ram:TypeCode")
    credit = type_code in CREDIT_TYPE_CODES
    sign = Decimal(-1) if credit else Decimal(1)
    settlement = root.find(_SETTLEMENT, NS)
    if settlement is None:
        raise UnreadableInvoice("the document has no ApplicableHeaderTradeSettlement")
    currency = _text(settlement, "ram:InvoiceCurrencyCode")
    default_account = _text(settlement, _ACCOUNT)
    lines = [
        _line(el, sign, default_account)
        for el in root.iterfind(f"{_TRADE}/ram:IncludedSupplyChainTradeLineItem", NS)
    ]
    lines += [
        _allowance_charge(el, sign)
        for el in settlement.iterfind("ram:SpecifiedTradeAllowanceCharge", NS)
    ]
    if not lines:
        raise UnreadableInvoice("the document has no invoice lines")
    totals = settlement.find("ram:SpecifiedTradeSettlementHeaderMonetarySummation", NS)
    if totals is None:
        raise UnreadableInvoice("the document has no monetary summation")
    return InvoiceInput(
        credit_note=credit,
        number=_text(root, "rsm:ExchangedDocument/ram:ID"),
        issue_date=_date(_text(root, "rsm:ExchangedDocument/ram:IssueDateTime/udt:DateTimeString")),
        currency=currency,
        supplier=_party(root.find(f"{_AGREEMENT}/ram:SellerTradeParty", NS), False),
        customer=_party(root.find(f"{_AGREEMENT}/ram:BuyerTradeParty", NS), True),
        lines=tuple(lines),
        untaxed=sign * _amount(totals, "ram:TaxBasisTotalAmount"),
        tax=sign * _tax_total(totals, currency),
        total=sign * _amount(totals, "ram:GrandTotalAmount"),
    )


def _line(el: etree._Element, sign: Decimal, default_account: str) -> InvoiceLine:
    settlement = el.find("ram:SpecifiedLineTradeSettlement", NS)
    if settlement is None:
        raise UnreadableInvoice("a line has no SpecifiedLineTradeSettlement")
    name = _text(el, "ram:SpecifiedTradeProduct/ram:Name")
    line_id = _text(el, "ram:AssociatedDocumentLineDocument/ram:LineID")
    return InvoiceLine(
        description=name or f"line {line_id}",
        amount=sign
        * _amount(
            settlement, "ram:SpecifiedTradeSettlementLineMonetarySummation/ram:LineTotalAmount"
        ),
        tax=_tax_key(settlement.find("ram:ApplicableTradeTax", NS)),
        account=_text(settlement, _ACCOUNT) or default_account,
    )


def _allowance_charge(el: etree._Element, sign: Decimal) -> InvoiceLine:
    charge = _text(el, "ram:ChargeIndicator/udt:Indicator").lower() == "true"
    amount = _amount(el, "ram:ActualAmount")
    return InvoiceLine(
        description=_text(el, "ram:Reason") or ("charge" if charge else "allowance"),
        amount=sign * (amount if charge else -amount),
        allowance=not charge,
        tax=_tax_key(el.find("ram:CategoryTradeTax", NS)),
    )


def _tax_key(tax: etree._Element | None) -> TaxKey:
    if tax is None:
        raise UnreadableInvoice("a line or allowance has no VAT category")
    code = _text(tax, "ram:CategoryCode").upper()
    if not code:
        raise UnreadableInvoice("a VAT category has no code")
    rate = _text(tax, "ram:RateApplicablePercent")
    return TaxKey(code, decimal(rate, "VAT percent") if rate else Decimal(0))


def _tax_total(totals: etree._Element, currency: str) -> Decimal:
    """TaxTotalAmount in the invoice currency (a second one may be in the accounting currency)."""
    amounts = totals.findall("ram:TaxTotalAmount", NS)
    for amount in amounts:
        if amount.get("currencyID", currency) == currency:
            return decimal(amount.text or "", "TaxTotalAmount")
    return Decimal(0)


def _party(party: etree._Element | None, buyer: bool) -> Counterparty:
    if party is None:
        return Counterparty(name="")
    vat = ""
    for registration in party.iterfind("ram:SpecifiedTaxRegistration/ram:ID", NS):
        if registration.get("schemeID", "").upper() == "VA":
            vat = (registration.text or "").strip()
    address = party.find("ram:PostalTradeAddress", NS)

    def where(path: str) -> str:
        return _text(address, path) if address is not None else ""

    return Counterparty(
        name=_text(party, "ram:Name"),
        vat=vat,
        company_number=_text(party, "ram:SpecifiedLegalOrganization/ram:ID"),
        # The buyer's ID is the seller's account for it: our auxiliary account on a sale.
        auxiliary_account=_text(party, "ram:ID") if buyer else "",
        street=where("ram:LineOne"),
        postal_code=where("ram:PostcodeCode"),
        city=where("ram:CityName"),
        country=where("ram:CountryID").upper(),
    )


def _amount(el: etree._Element, path: str) -> Decimal:
    text = _text(el, path)
    if not text:
        raise UnreadableInvoice(f"{path.rsplit(':', 1)[-1]} is missing")
    return decimal(text, path.rsplit(":", 1)[-1])


def _date(text: str) -> dt.date:
    """EN 16931 dates are format 102: YYYYMMDD."""
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise UnreadableInvoice(f"IssueDateTime {text!r} is not a YYYYMMDD date") from None


def _text(el: etree._Element, path: str) -> str:
    return (el.findtext(path, namespaces=NS) or "").strip()
