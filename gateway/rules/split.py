"""Purchase or sales: which side of the document the dossier is on, and nothing else.

Only identifiers that say who a company is for tax or company law count: the VAT number, the
legal-entity company number when it is Belgian or unqualified, and an endpoint whose scheme is
a VAT scheme or the Belgian enterprise register. GLNs, Swedish or Danish register numbers,
e-mail endpoints and the like name a mailbox or a record elsewhere, not the dossier's company.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from gateway.rules.facts import InvoiceFacts, Party, SchemedId
from gateway.rules.vat import normalize_vat, same_party
from gateway.store.models import DocType

BE_COMPANY_SCHEMES = frozenset({"0208", "9956", "BE:CBE"})

# Peppol EAS codes whose value is a VAT number, with the country that number belongs to.
VAT_SCHEME_COUNTRIES = {
    "9906": "IT",
    "9909": "NO",
    "9910": "HU",
    "9914": "AT",
    "9920": "ES",
    "9922": "AD",
    "9923": "AL",
    "9924": "BA",
    "9925": "BE",
    "9926": "BG",
    "9927": "CH",
    "9928": "CY",
    "9929": "CZ",
    "9930": "DE",
    "9931": "EE",
    "9932": "GB",
    "9933": "EL",
    "9934": "HR",
    "9935": "IE",
    "9936": "LI",
    "9937": "LT",
    "9938": "LU",
    "9939": "LV",
    "9940": "MC",
    "9941": "ME",
    "9942": "MK",
    "9943": "MT",
    "9944": "NL",
    "9945": "PL",
    "9946": "PT",
    "9947": "RO",
    "9948": "RS",
    "9949": "SI",
    "9950": "SK",
    "9951": "SM",
    "9952": "TR",
    "9953": "VA",
    "9955": "SE",
    "9957": "FR",
    "0211": "IT",
    "0213": "FI",
}
_TEXT_VAT_SCHEME = re.compile(r"([A-Z]{2}):VAT")


@dataclass(frozen=True)
class Decision:
    doc_type: DocType | None
    reason: str


def decide(facts: InvoiceFacts, dossier_ids: Sequence[str]) -> Decision:
    """Purchase when the dossier is the customer, sales when it is the supplier.

    Neither or both is refused rather than guessed: a wrong purchase/sales split ends up in the
    wrong journal of the accounting package, an unrecognised document only waits in the Inbox.
    """
    wanted = [value for value in dossier_ids if normalize_vat(value)]
    if not wanted:
        return Decision(None, "dossier-unidentified: dossier has no VAT or company number")
    supplier, customer = party_ids(facts.supplier), party_ids(facts.customer)
    as_supplier, as_customer = _matching(wanted, supplier), _matching(wanted, customer)
    if bool(as_supplier) == bool(as_customer):
        return Decision(None, _mismatch(wanted, supplier, customer, both=bool(as_supplier)))
    credit = books_as_credit(facts)
    if as_customer:
        doc_type = DocType.PURCHASE_CREDIT_NOTE if credit else DocType.PURCHASE_INVOICE
        note = f"purchase: dossier is the customer ({as_customer})"
    else:
        doc_type = DocType.SALES_CREDIT_NOTE if credit else DocType.SALES_INVOICE
        note = f"sales: dossier is the supplier ({as_supplier})"
    if credit and facts.kind == "invoice":
        note += f"; invoice with negative total {facts.payable_amount} booked as credit note"
    return Decision(doc_type, note)


def books_as_credit(facts: InvoiceFacts) -> bool:
    """A declared credit note, or an invoice whose payable amount is negative."""
    return facts.kind == "credit-note" or _negative(facts.payable_amount)


def party_ids(party: Party) -> tuple[str, ...]:
    """The party's tax and company identifiers, normalised, without repeats."""
    ids = [normalize_vat(party.vat), _company_id(party.company), _endpoint_id(party.endpoint)]
    return tuple(dict.fromkeys(value for value in ids if value))


def _company_id(company: SchemedId | None) -> str:
    if company is None:
        return ""
    if company.scheme.upper() in BE_COMPANY_SCHEMES:
        return normalize_vat(company.value, "BE")
    return "" if company.scheme else normalize_vat(company.value)


def _endpoint_id(endpoint: SchemedId | None) -> str:
    if endpoint is None:
        return ""
    if endpoint.scheme.upper() in BE_COMPANY_SCHEMES:
        return normalize_vat(endpoint.value, "BE")
    country = _vat_scheme_country(endpoint.scheme)
    return normalize_vat(endpoint.value, country) if country else ""


def _vat_scheme_country(scheme: str) -> str:
    """Numeric EAS code, or the older textual form (`BE:VAT`) used by e-FFF and Peppol BIS v2."""
    textual = _TEXT_VAT_SCHEME.fullmatch(scheme.upper())
    return textual.group(1) if textual else VAT_SCHEME_COUNTRIES.get(scheme, "")


def _matching(wanted: Iterable[str], ids: Iterable[str]) -> str:
    return next((i for i in ids for w in wanted if same_party(w, i)), "")


def _mismatch(
    wanted: Sequence[str], supplier: Sequence[str], customer: Sequence[str], *, both: bool
) -> str:
    dossier = "/".join(normalize_vat(value) for value in wanted)
    sides = f"supplier ({_show(supplier)}) {'and' if both else 'nor'} customer ({_show(customer)})"
    return f"party-mismatch: dossier {dossier} is {'both' if both else 'neither'} {sides}"


def _show(ids: Sequence[str]) -> str:
    return ", ".join(ids) or "no VAT or company number"


def _negative(amount: str) -> bool:
    try:
        return Decimal(amount) < 0
    except InvalidOperation:
        return False
