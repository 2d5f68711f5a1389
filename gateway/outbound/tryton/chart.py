"""Reading the package's side of the mapping: parties, accounts, taxes, journals, invoices.

Every function is one or two JSON-RPC calls and says in its name what it finds. Codes that do
not resolve become `BookingRefused` with the seed's error code, so the accountant reads the
same words the commercial products use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.booking.invoice import Counterparty
from gateway.booking.mapping import (
    ACCOUNT_NOT_ACTIVE,
    ACCOUNT_NOT_FOUND,
    JOURNAL_NOT_FOUND,
    PARTNER_VALIDATION,
    TAX_RATE_NOT_FOUND,
    BookingRefused,
)
from gateway.outbound.tryton.rpc import TrytonRpc, TrytonUserError

MARKER = "gateway-document-sha256:"


@dataclass(frozen=True)
class AccountInfo:
    id: int
    code: str
    closed: bool
    expense: bool
    revenue: bool
    payable: bool
    receivable: bool

    def fits_line(self, invoice_type: str) -> bool:
        return not self.closed and (self.expense if invoice_type == "in" else self.revenue)


async def accounts_by_code(rpc: TrytonRpc, codes: set[str]) -> dict[str, AccountInfo]:
    if not codes:
        return {}
    rows = await rpc.call(
        "model.account.account.search_read",
        [["code", "in", sorted(codes)], ["company", "=", rpc.context.get("company")]],
        0,
        None,
        None,
        ["code", "closed", "type.expense", "type.revenue", "type.payable", "type.receivable"],
    )
    found = {}
    for row in rows:
        kind = row.get("type.") or {}
        found[row["code"]] = AccountInfo(
            id=row["id"],
            code=row["code"],
            closed=bool(row["closed"]),
            expense=bool(kind.get("expense")),
            revenue=bool(kind.get("revenue")),
            payable=bool(kind.get("payable")),
            receivable=bool(kind.get("receivable")),
        )
    return found


def pick_line_account(
    candidates: tuple[str, ...], accounts: dict[str, AccountInfo], invoice_type: str, what: str
) -> int:
    """The first candidate that exists, is open and fits the invoice's lines (seed 003,
    appendix 1: the document's account, then the mapped default); else why the last failed."""
    for code in candidates:
        info = accounts.get(code)
        if info is not None and info.fits_line(invoice_type):
            return info.id
    if not candidates:
        raise BookingRefused(ACCOUNT_NOT_FOUND, f"{what}: no account on the line and no default")
    last = candidates[-1]
    info = accounts.get(last)
    tried = ", ".join(candidates)
    if info is None:
        raise BookingRefused(ACCOUNT_NOT_FOUND, f"{what}: account {last} does not exist ({tried})")
    state = "closed" if info.closed else "not an account for these invoice lines"
    raise BookingRefused(ACCOUNT_NOT_ACTIVE, f"{what}: account {last} is {state} ({tried})")


async def taxes_by_name(rpc: TrytonRpc, names: set[str]) -> dict[str, int]:
    rows = await rpc.call(
        "model.account.tax.search_read",
        [["name", "in", sorted(names)], ["parent", "=", None]],
        0,
        None,
        None,
        ["name"],
    )
    found = {row["name"]: row["id"] for row in rows}
    missing = sorted(names - set(found))
    if missing:
        text = f"mapped tax {missing[0]!r} does not exist in Tryton"
        raise BookingRefused(TAX_RATE_NOT_FOUND, text)
    return found


async def journal_by_code(rpc: TrytonRpc, code: str) -> int:
    rows = await rpc.call("model.account.journal.search", [["code", "=", code]], 0, 1, None)
    if not rows:
        raise BookingRefused(JOURNAL_NOT_FOUND, f"mapped journal {code!r} does not exist in Tryton")
    return int(rows[0])


async def currency_by_code(rpc: TrytonRpc, code: str) -> int:
    rows = await rpc.call("model.currency.currency.search", [["code", "=", code]], 0, 1, None)
    if not rows:
        raise BookingRefused("currency-not-found", f"currency {code!r} does not exist in Tryton")
    return int(rows[0])


async def match_party(rpc: TrytonRpc, party: Counterparty) -> int | None:
    """Seed 003's order: auxiliary account (the party's code), VAT number, company number,
    name. The first criterion that finds exactly one party wins."""
    domains: list[list[Any]] = []
    if party.auxiliary_account:
        domains.append([["code", "=", party.auxiliary_account]])
    for number in (party.vat, party.company_number):
        compact = "".join(ch for ch in number if ch.isalnum()).upper()
        if compact:
            domains.append([["identifiers", "where", [["code_compact", "=", compact]]]])
    if party.name:
        domains.append([["name", "=", party.name]])
    for domain in domains:
        ids = await rpc.call("model.party.party.search", domain, 0, 2, None)
        if len(ids) == 1:
            return int(ids[0])
    return None


async def create_party(rpc: TrytonRpc, party: Counterparty) -> int:
    """A new third party with its VAT number and address from the document."""
    if not party.name:
        raise BookingRefused(PARTNER_VALIDATION, "the document names no third party")
    address: dict[str, Any] = {
        "street": party.street,
        "postal_code": party.postal_code,
        "city": party.city,
    }
    if party.country:
        countries = await rpc.call(
            "model.country.country.search", [["code", "=", party.country]], 0, 1, None
        )
        if countries:
            address["country"] = countries[0]
    values: dict[str, Any] = {"name": party.name, "addresses": [["create", [address]]]}
    identifiers = _identifiers(party)
    if identifiers:
        values["identifiers"] = [["create", identifiers]]
    try:
        (new_id,) = await rpc.call("model.party.party.create", [values])
    except TrytonUserError:
        if not identifiers:
            raise
        # The package refused the number's check digits: keep it, untyped, for the accountant.
        values["identifiers"] = [["create", [{"code": i["code"]} for i in identifiers]]]
        (new_id,) = await rpc.call("model.party.party.create", [values])
    return int(new_id)


def _identifiers(party: Counterparty) -> list[dict[str, str]]:
    found = []
    if party.vat:
        found.append({"type": "eu_vat", "code": party.vat})
    compact_vat = "".join(ch for ch in party.vat if ch.isalnum()).upper()
    company = "".join(ch for ch in party.company_number if ch.isalnum()).upper()
    if company and company not in compact_vat:
        found.append({"code": party.company_number})
    return found


async def find_booked(
    rpc: TrytonRpc, invoice_type: str, party_id: int | None, reference: str, sha256: str
) -> int | None:
    """An invoice this document already became: by our marker, else by supplier + number."""
    domains: list[list[Any]] = [
        [["type", "=", invoice_type], ["comment", "like", f"%{MARKER}{sha256}%"]]
    ]
    if party_id is not None and reference:
        domains.append(
            [["type", "=", invoice_type], ["party", "=", party_id], ["reference", "=", reference]]
        )
    for domain in domains:
        ids = await rpc.call(
            "model.account.invoice.search", [*domain, ["state", "!=", "cancelled"]], 0, 1, None
        )
        if ids:
            return int(ids[0])
    return None


async def attach(rpc: TrytonRpc, invoice_id: int, files: list[tuple[str, bytes]]) -> None:
    """Attach files not yet on the invoice (a retry after a crash must not attach twice)."""
    resource = f"account.invoice,{invoice_id}"
    have = await rpc.call(
        "model.ir.attachment.search_read", [["resource", "=", resource]], 0, None, None, ["name"]
    )
    names = {row["name"] for row in have}
    new = [
        {"resource": resource, "name": name, "type": "data", "data": data}
        for name, data in files
        if name not in names
    ]
    if new:
        await rpc.call("model.ir.attachment.create", new)
