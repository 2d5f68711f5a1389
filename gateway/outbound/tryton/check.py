"""`gateway mapping check`: every code the mapping names, looked up in the package's charts.

Reads the accounts, taxes and journals once and lists what does not exist or cannot be used,
so the office fixes the mapping before a document is rejected for it.
"""

from __future__ import annotations

from gateway.booking.mapping import DOC_TYPES, Mapping
from gateway.outbound.tryton.chart import accounts_by_code
from gateway.outbound.tryton.rpc import TrytonRpc

ACCOUNT_KEYS = (
    ("purchase_account", "in", "expense"),
    ("sales_account", "out", "revenue"),
    ("purchase_discount_account", "in", "expense"),
    ("sales_discount_account", "out", "revenue"),
    ("supplier_account", "in", "payable"),
    ("customer_account", "out", "receivable"),
    ("debit_rounding_account", "", ""),
    ("credit_rounding_account", "", ""),
)


async def mapping_problems(rpc: TrytonRpc, mapping: Mapping) -> list[str]:
    """One line per mapped code that Tryton does not have, or has closed or of the wrong kind."""
    problems = await _account_problems(rpc, mapping)
    taxes = {f"purchase_vat.{k}": v for k, v in mapping.purchase_vat.items()}
    taxes |= {f"sales_vat.{k}": v for k, v in mapping.sales_vat.items()}
    for key in ("purchase_rounding_tax", "sales_rounding_tax"):
        if getattr(mapping, key):
            taxes[key] = getattr(mapping, key)
    rows = await rpc.call(
        "model.account.tax.search_read",
        [["name", "in", sorted(set(taxes.values()))], ["parent", "=", None]],
        0,
        None,
        None,
        ["name", "active", "group.kind"],
    )
    known = {row["name"]: row for row in rows}
    for key, name in sorted(taxes.items()):
        row = known.get(name)
        if row is None:
            problems.append(f"{key}: tax {name!r} does not exist or is inactive")
            continue
        kind = (row.get("group.") or {}).get("kind", "both")
        side = "purchase" if key.startswith("purchase") else "sale"
        if kind not in (side, "both"):
            problems.append(f"{key}: tax {name!r} is a {kind} tax")
    journals = {t: mapping.journal(t) for t in DOC_TYPES}
    found = await rpc.call(
        "model.account.journal.search_read",
        [["code", "in", sorted(set(journals.values()))]],
        0,
        None,
        None,
        ["code", "type"],
    )
    codes = {row["code"]: row["type"] for row in found}
    for doc_type, code in journals.items():
        wanted = "expense" if doc_type.startswith("purchase") else "revenue"
        if code not in codes:
            problems.append(f"journals.{doc_type}: journal {code!r} does not exist")
        elif codes[code] != wanted:
            problems.append(f"journals.{doc_type}: journal {code!r} is a {codes[code]} journal")
    return problems


async def _account_problems(rpc: TrytonRpc, mapping: Mapping) -> list[str]:
    wanted = {key: getattr(mapping, key) for key, _, _ in ACCOUNT_KEYS if getattr(mapping, key)}
    accounts = await accounts_by_code(rpc, set(wanted.values()))
    problems = []
    for key, _, kind in ACCOUNT_KEYS:
        code = wanted.get(key)
        if not code:
            continue
        info = accounts.get(code)
        if info is None:
            problems.append(f"{key}: account {code} does not exist")
        elif info.closed:
            problems.append(f"{key}: account {code} is closed")
        elif kind and not getattr(info, kind):
            problems.append(f"{key}: account {code} is not an {kind} account")
    return problems
