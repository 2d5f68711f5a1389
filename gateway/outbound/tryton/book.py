"""Mapped-entry mode: the gateway builds the invoice in Tryton from a `Plan`.

Codes are resolved to the package's ids first, so a missing account, tax or journal is reported
with the seed's code before anything is written. The invoice is created in one call (one
transaction), read back, and balanced with a rounding line when the package's total differs
from the document's by no more than the tolerance.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gateway.booking.mapping import (
    ACCOUNT_NOT_ACTIVE,
    ACCOUNT_NOT_FOUND,
    AMOUNT_VALIDATION,
    BookingRefused,
    Mapping,
    Plan,
    rounding_account,
    rounding_tax,
)
from gateway.outbound.tryton.chart import (
    MARKER,
    AccountInfo,
    accounts_by_code,
    create_party,
    currency_by_code,
    journal_by_code,
    pick_line_account,
    taxes_by_name,
)
from gateway.outbound.tryton.rpc import TrytonRpc

TOTAL_FIELDS = ["untaxed_amount", "tax_amount", "total_amount", "state"]


async def book_mapped(
    rpc: TrytonRpc, plan: Plan, mapping: Mapping, party_id: int | None, sha256: str
) -> int:
    """Create the draft invoice for `plan`; returns its id. The party is created if needed."""
    codes = {code for line in plan.lines for code in line.accounts}
    codes |= {plan.collective_account} - {""}
    accounts = await accounts_by_code(rpc, codes)
    taxes = await taxes_by_name(rpc, {line.tax for line in plan.lines})
    journal = await journal_by_code(rpc, plan.journal)
    currency = await currency_by_code(rpc, plan.currency)
    lines = [
        _line(
            pick_line_account(line.accounts, accounts, plan.invoice_type, line.description),
            line.amount,
            line.description,
            [taxes[line.tax]],
            currency,
        )
        for line in plan.lines
    ]
    if party_id is None:
        party_id = await create_party(rpc, plan.party)
    values: dict[str, Any] = {
        "type": plan.invoice_type,
        "company": rpc.context.get("company"),
        "party": party_id,
        **await _party_defaults(rpc, party_id, plan.invoice_type),
        "currency": currency,
        "journal": journal,
        "invoice_date": plan.invoice_date,
        "reference": plan.reference,
        "description": plan.description,
        "comment": f"{MARKER}{sha256}",
        "lines": [["create", lines]],
    }
    if plan.collective_account:
        values["account"] = _collective(accounts, plan)
    (invoice_id,) = await rpc.call("model.account.invoice.create", [values])
    return int(invoice_id)


def _collective(accounts: dict[str, AccountInfo], plan: Plan) -> int:
    code = plan.collective_account
    info = accounts.get(code)
    if info is None:
        raise BookingRefused(ACCOUNT_NOT_FOUND, f"collective account {code} does not exist")
    wanted = info.payable if plan.invoice_type == "in" else info.receivable
    if info.closed or not wanted:
        state = "closed" if info.closed else "not a payable/receivable account"
        raise BookingRefused(ACCOUNT_NOT_ACTIVE, f"collective account {code} is {state}")
    return info.id


def _line(
    account: int, amount: Decimal, description: str, taxes: list[int], currency: int
) -> dict[str, Any]:
    """Quantity ±1 at the line's net amount: the document's arithmetic, not ours, decides."""
    return {
        "type": "line",
        "currency": currency,
        "account": account,
        "quantity": 1.0 if amount >= 0 else -1.0,
        "unit_price": abs(amount),
        "description": description,
        "taxes": [["add", taxes]] if taxes else [],
    }


async def _party_defaults(rpc: TrytonRpc, party_id: int, invoice_type: str) -> dict[str, Any]:
    """The party's first address and its own payable/receivable account (RPC `create` runs no
    on_change, so what the client would fill in we fill in)."""
    account = "account_payable" if invoice_type == "in" else "account_receivable"
    (row,) = await rpc.call("model.party.party.read", [party_id], ["addresses", account])
    if row[account] is None:  # the party uses the company's default
        (config,) = await rpc.call("model.account.configuration.read", [1], [f"default_{account}"])
        row[account] = config[f"default_{account}"]
    return {
        "invoice_address": row["addresses"][0] if row["addresses"] else None,
        "account": row[account],
    }


async def read_totals(rpc: TrytonRpc, invoice_id: int) -> dict[str, Any]:
    (row,) = await rpc.call("model.account.invoice.read", [invoice_id], TOTAL_FIELDS)
    return dict(row)


async def balance(
    rpc: TrytonRpc, invoice_id: int, invoice_type: str, total: Decimal, mapping: Mapping
) -> None:
    """Add a rounding line when the package's total is off the document's `total` by at most
    the tolerance (both modes: Tryton's UBL import rounds per line too)."""
    (row,) = await rpc.call(
        "model.account.invoice.read", [invoice_id], ["total_amount", "currency"]
    )
    difference = total - Decimal(row["total_amount"])
    if difference == 0 or abs(difference) > Decimal(mapping.rounding_tolerance):
        return
    code = rounding_account(mapping, invoice_type, difference)
    if not code:
        raise BookingRefused(
            AMOUNT_VALIDATION,
            f"lines give {row['total_amount']}, the document says {total}, and no rounding"
            " account is mapped",
        )
    accounts = await accounts_by_code(rpc, {code})
    account = pick_line_account((code,), accounts, invoice_type, "rounding")
    tax_name = rounding_tax(mapping, invoice_type)
    taxes = list((await taxes_by_name(rpc, {tax_name})).values()) if tax_name else []
    line = _line(account, difference, "rounding", taxes, row["currency"])
    await rpc.call("model.account.invoice.write", [invoice_id], {"lines": [["create", [line]]]})
