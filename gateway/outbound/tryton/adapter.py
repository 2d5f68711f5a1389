"""The `tryton` integration: invoices booked into Tryton over its JSON-RPC API.

Two modes, chosen by the mapping (per integration, overridable per dossier): `e-document`
hands a UBL purchase document to Tryton's own UBL import; `mapped` builds the invoice from the
mapping (sales documents and CII always go this way: Tryton imports UBL supplier invoices
only).
Both look for an invoice this document already became before booking, so a second delivery or
a restart after the package committed books nothing twice. After booking, the invoice is read
back and must match the document; anything that goes wrong after the draft was created deletes
the draft, so `rejected` and `failed` always mean "not in the package".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog

from gateway.booking.invoice import InvoiceInput, UnreadableInvoice
from gateway.booking.mapping import (
    AMOUNT_VALIDATION,
    BookingRefused,
    Mapping,
    admit,
    merged,
    parse_mapping,
    plan_invoice,
)
from gateway.booking.read import read_invoice
from gateway.config import ConfigError
from gateway.outbound.base import (
    DeliveryError,
    Outgoing,
    PermanentError,
    RejectedError,
)
from gateway.outbound.kinds import TrytonOptions
from gateway.outbound.tryton.book import balance, book_mapped, read_totals
from gateway.outbound.tryton.chart import MARKER, attach, find_booked, match_party
from gateway.outbound.tryton.errors import rejection
from gateway.outbound.tryton.rpc import LoginRefused, TrytonRpc, TrytonUserError
from gateway.rules.ubl import CREDIT_NOTE, INVOICE, embedded_pdf
from gateway.rules.xmlsafe import NotXml, parse_xml

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Document:
    """What one delivery books: the invoice, its side, and the files to attach."""

    invoice: InvoiceInput
    doc_type: str
    files: list[tuple[str, bytes]]
    has_pdf: bool
    ubl: bool

    @property
    def invoice_type(self) -> str:
        return "in" if self.doc_type.startswith("purchase") else "out"


class TrytonAdapter:
    def __init__(self, name: str, options: TrytonOptions) -> None:
        self.name = name
        self.options = options
        self._rpc: TrytonRpc | None = None
        self._password = ""
        # Set when Tryton refused our password; cleared only when the password file changes.
        self.broken = ""
        # Workers share this adapter: one login at a time, so a wrong password costs one try.
        self._login_lock = asyncio.Lock()

    async def close(self) -> None:
        if self._rpc is not None:
            await self._rpc.close()
            self._rpc = None

    async def deliver(self, item: Outgoing) -> str:
        try:
            rpc = await self.client()
            return await self._deliver(rpc, item)
        except LoginRefused as exc:
            if exc.code != "integration-broken":
                self.broken = exc.text
                log.error("integration_broken", integration=self.name, reason=exc.text)
            raise
        except BookingRefused as exc:
            error = RejectedError if exc.rejected else PermanentError
            raise error(exc.code, exc.text) from exc
        except (UnreadableInvoice, NotXml) as exc:
            raise PermanentError("unreadable-invoice", str(exc)) from exc
        except TrytonUserError as exc:
            raise rejection(exc) from exc

    async def test(self) -> dict[str, Any]:
        """One login and the user's company: what `gateway integration test` shows."""
        rpc = await self.client()
        return {"user": rpc.login_name, "company": rpc.context.get("company")}

    async def client(self) -> TrytonRpc:
        """The logged-in session (one login attempt at most; never after a refusal)."""
        async with self._login_lock:
            return await self._client_locked()

    async def _client_locked(self) -> TrytonRpc:
        password = await asyncio.to_thread(self._read_password)
        if self.broken and password == self._password:
            raise LoginRefused("integration-broken", self.broken)
        if self._rpc is None or password != self._password:
            await self.close()
            self.broken, self._password = "", password
            opts = self.options
            self._rpc = TrytonRpc(opts.url, opts.database, opts.username, password, opts.timeout)
        if not self._rpc.context:
            try:
                await self._rpc.login()
            except LoginRefused as exc:
                self.broken = exc.text
                raise
        return self._rpc

    def _read_password(self) -> str:
        try:
            return self.options.password_file.read_text().strip()
        except OSError as exc:
            raise PermanentError(
                "password-file", f"{self.options.password_file}: {exc.strerror or exc}"
            ) from exc

    def _mapping(self, item: Outgoing) -> Mapping:
        """The integration's mapping with the dossier's override on top."""
        override = item.overrides.get("mapping") or {}
        if not override:
            return self.options.mapping
        table = merged(self.options.mapping.as_json(), override)
        try:
            return parse_mapping(table, f"dossier {item.dossier!r}")
        except ConfigError as exc:
            raise PermanentError("mapping-invalid", str(exc)) from exc

    async def _deliver(self, rpc: TrytonRpc, item: Outgoing) -> str:
        mapping = self._mapping(item)
        doc = await asyncio.to_thread(_read_document, item)
        admit(doc.invoice, doc.doc_type, mapping, doc.has_pdf)
        party = doc.invoice.supplier if doc.invoice_type == "in" else doc.invoice.customer
        party_id = await match_party(rpc, party)
        # Tryton imports UBL supplier invoices only; everything else is built from the mapping.
        e_document = mapping.mode == "e-document" and doc.invoice_type == "in" and doc.ubl
        found = await find_booked(rpc, doc.invoice_type, party_id, doc.invoice.number, item.sha256)
        if found is not None:
            await attach(rpc, found, _our_files(doc, e_document))
            log.info("tryton_already_booked", document=item.document_id, invoice=found)
            return f"account.invoice,{found}"
        if e_document:
            invoice_id = await _import_ubl(rpc, item)
        else:
            plan = plan_invoice(doc.invoice, doc.doc_type, mapping)
            invoice_id = await book_mapped(rpc, plan, mapping, party_id, item.sha256)
        try:
            await _finish(rpc, invoice_id, doc, mapping, e_document)
        except (DeliveryError, BookingRefused, TrytonUserError):
            await _delete_draft(rpc, invoice_id)
            raise
        return f"account.invoice,{invoice_id}"


def _read_document(item: Outgoing) -> Document:
    """UBL or CII XML; a PDF (Factur-X) is booked from its XML once recognition extracts it."""
    if item.data.lstrip()[:5] == b"%PDF-":
        raise PermanentError("unsupported-syntax", "a PDF cannot be booked yet (UBL or CII XML)")
    root = parse_xml(item.data)
    invoice = read_invoice(root)
    ubl = root.tag in (INVOICE, CREDIT_NOTE)
    pdf = embedded_pdf(root) if ubl else None
    files = [(item.filename, item.data)] + ([pdf] if pdf else [])
    return Document(invoice, item.doc_type, files, pdf is not None, ubl)


async def _import_ubl(rpc: TrytonRpc, item: Outgoing) -> int:
    """Tryton's own UBL import makes the draft (and attaches the embedded PDF itself)."""
    invoice_id = int(await rpc.call("model.edocument.ubl.invoice.parse", item.data))
    await rpc.call("model.account.invoice.write", [invoice_id], {"comment": MARKER + item.sha256})
    return invoice_id


async def _finish(
    rpc: TrytonRpc, invoice_id: int, doc: Document, mapping: Mapping, e_document: bool
) -> None:
    """Balance and compare the totals the package computed, attach the files, post if asked."""
    await balance(rpc, invoice_id, doc.invoice_type, doc.invoice.total, mapping)
    totals = await read_totals(rpc, invoice_id)
    _check_totals(totals, doc.invoice, Decimal(mapping.rounding_tolerance))
    await attach(rpc, invoice_id, _our_files(doc, e_document))
    if mapping.post:
        await rpc.call("model.account.invoice.validate_invoice", [invoice_id])
        await rpc.call("model.account.invoice.post", [invoice_id])


def _our_files(doc: Document, e_document: bool) -> list[tuple[str, bytes]]:
    """The original, plus the embedded PDF unless Tryton's UBL import attached it itself."""
    return doc.files[:1] if e_document else doc.files


def _check_totals(totals: dict[str, Any], invoice: InvoiceInput, tolerance: Decimal) -> None:
    total, tax = Decimal(totals["total_amount"]), Decimal(totals["tax_amount"])
    if total != invoice.total or abs(tax - invoice.tax) > tolerance:
        raise BookingRefused(
            AMOUNT_VALIDATION,
            f"Tryton computed total {total} (VAT {tax}), the document says {invoice.total}"
            f" (VAT {invoice.tax})",
        )


async def _delete_draft(rpc: TrytonRpc, invoice_id: int) -> None:
    """Best effort: a draft left behind still carries our marker, so it is never doubled."""
    try:
        await rpc.call("model.account.invoice.delete", [invoice_id])
    except (DeliveryError, TrytonUserError) as exc:
        log.warning("tryton_draft_kept", invoice=invoice_id, error=str(exc))
