"""Shared pieces of the Tryton tests: documents as the worker hands them over, adapters built
from options the way the daemon builds them, and a reader that looks into the package."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from integration.tryton_server import DBNAME, PASSWORD, TrytonServer

from gateway.outbound.base import Outgoing
from gateway.outbound.kinds import make_adapter
from gateway.outbound.tryton.adapter import TrytonAdapter
from gateway.outbound.tryton.rpc import TrytonRpc
from gateway.rules.ubl import NotUbl, read_ubl
from gateway.rules.xmlsafe import parse_xml

PURCHASE_VAT = {
    "S:21": "BTW 21% Aankoop van diverse goederen en diensten",
    "S:12": "BTW 12% Aankoop van diverse goederen en diensten",
    "S:6": "BTW 6% Aankoop van diverse goederen en diensten",
    "S:25": "Buitenlandse BTW 25%",
    "S:16": "Buitenlandse BTW 16%",
    "S:15": "Buitenlandse BTW 15%",
    "Z:0": "BTW 0% Aankoop van diverse goederen en diensten",
    "E:0": "Vrijgesteld van BTW",
    "O:0": "Buiten het toepassingsgebied van de BTW",
    "K:0": "BTW 21% Intracommunautaire aankoop van diverse goederen en diensten",
    "AE:0": "BTW 21% Aankoop van diverse goederen en diensten medecontractanten",
}
SALES_VAT = {"S:21": "BTW 21% Verkoop van diensten", "S:6": "BTW 6% Verkoop van diensten"}
MAPPING: dict[str, Any] = {
    "mode": "mapped",
    "purchase_vat": PURCHASE_VAT,
    "sales_vat": SALES_VAT,
    "purchase_account": "604",
    "sales_account": "700",
    "supplier_account": "440",
    "customer_account": "400",
    "debit_rounding_account": "602",
    "credit_rounding_account": "603",
}


def outgoing(
    data: bytes,
    doc_type: str = "",
    filename: str = "invoice.xml",
    overrides: dict[str, Any] | None = None,
    document_id: int = 1,
) -> Outgoing:
    try:
        ubl = read_ubl(parse_xml(data))
    except NotUbl:
        facts: dict[str, Any] = {"syntax": "cii"}
        kind = "invoice"
    else:
        facts = ubl.as_json()
        kind = "credit_note" if ubl.kind == "credit-note" else "invoice"
    return Outgoing(
        delivery_id=document_id,
        attempt_id=f"attempt-{document_id}",
        document_id=document_id,
        dossier="acme",
        accounting_file_id="",
        doc_type=doc_type or f"purchase_{kind}",
        filename=filename,
        media_type="application/xml",
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        facts=facts,
        overrides=overrides or {},
    )


def adapter(
    server: TrytonServer,
    workdir: Path,
    mapping: dict[str, Any] | None = None,
    user: str = "gateway",
    password: str = PASSWORD,
) -> TrytonAdapter:
    password_file = workdir / f"{user}.pass"
    password_file.write_text(password + "\n")
    options = {
        "url": server.url,
        "database": DBNAME,
        "username": user,
        "password_file": str(password_file),
        "mapping": mapping if mapping is not None else {},
    }
    made = make_adapter("tryton", "books", options)
    assert isinstance(made, TrytonAdapter)
    return made


def admin(server: TrytonServer) -> TrytonRpc:
    """Tryton's admin, to look at what the gateway user booked."""
    return TrytonRpc(server.url, DBNAME, "admin", PASSWORD)


async def invoice(rpc: TrytonRpc, ref: str, fields: list[str]) -> dict[str, Any]:
    model, _, ident = ref.partition(",")
    assert model == "account.invoice"
    (row,) = await rpc.call("model.account.invoice.read", [int(ident)], fields)
    return dict(row)


async def invoice_count(rpc: TrytonRpc) -> int:
    return int(await rpc.call("model.account.invoice.search_count", []))
