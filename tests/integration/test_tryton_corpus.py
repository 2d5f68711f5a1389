"""Every UBL invoice and credit note of the corpus into a real Tryton, in both booking modes.

Each document the package accepts is booked once, its totals read back equal the document's,
and a second delivery (by a fresh adapter, as after a restart) finds it instead of booking again.
Documents the package refuses are `rejected` with its own message, never an internal error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from integration.tryton_helpers import MAPPING, adapter, admin, invoice, invoice_count, outgoing
from integration.tryton_server import TrytonServer

from gateway.booking.ubl_invoice import invoice_from_ubl
from gateway.outbound.base import RejectedError

pytestmark = pytest.mark.integration

# VAT computed on the base after a Belgian cash discount: the document's VAT is lower than its
# lines' rate times base, which Tryton will not reproduce; rejected with both figures.
CASH_DISCOUNT_VAT = {
    "UBLBE_BE0000000196_V01-15000005.xml": "ERROR_SYNC_INVOICE_AMOUNT_VALIDATION",
    "UBLBE_BE0000000196_V01-15000029.xml": "ERROR_SYNC_INVOICE_AMOUNT_VALIDATION",
}


def _corpus_files(corpus: Path) -> list[Path]:
    return sorted((corpus / "peppol-bis3").glob("*.xml")) + sorted((corpus / "efff").glob("*.xml"))


async def _book_corpus(
    server: TrytonServer, workdir: Path, mapping: dict[str, Any], files: list[Path]
) -> tuple[dict[str, str], dict[str, str]]:
    """Deliver each file twice (second time by a new adapter); return refs and rejections."""
    first, second = adapter(server, workdir, mapping), adapter(server, workdir, mapping)
    reader = admin(server)
    booked: dict[str, str] = {}
    rejected: dict[str, str] = {}
    created_by: dict[str, Path] = {}
    try:
        for number, path in enumerate(files, start=1):
            item = outgoing(path.read_bytes(), filename=path.name, document_id=number)
            try:
                ref = await first.deliver(item)
            except RejectedError as exc:
                rejected[path.name] = f"{exc.code}: {exc.text}"
                continue
            booked[path.name] = ref
            assert await second.deliver(item) == ref, path.name
            source = created_by.setdefault(ref, path)
            expected = invoice_from_ubl(source.read_bytes())
            row = await invoice(reader, ref, ["total_amount", "tax_amount", "comment"])
            assert (row["total_amount"], row["tax_amount"]) == (expected.total, expected.tax), (
                path.name
            )
        assert await invoice_count(reader) == len(set(booked.values()))
    finally:
        for closing in (first, second):
            await closing.close()
        await reader.close()
    return booked, rejected


def test_corpus_e_document_mode_books_each_accepted_document_once(
    tryton_factory: Callable[[], TrytonServer], corpus: Path, tmp_path: Path
) -> None:
    files = _corpus_files(corpus)
    mapping = {**MAPPING, "mode": "e-document"}
    booked, rejected = asyncio.run(_book_corpus(tryton_factory(), tmp_path, mapping, files))
    assert len(booked) + len(rejected) == len(files)
    assert {name: reason.split(":")[0] for name, reason in rejected.items()} == {
        # Tryton finds no company for customers the test company does not answer to,
        "vat-category-O.xml": "ERROR_SYNC_INVOICE_COMPANY_NOT_FOUND",
        "UBLBE_BE0000000196_V01-15000033.xml": "ERROR_SYNC_INVOICE_COMPANY_NOT_FOUND",
        "UBLBE_BE0000000196_V01-15000036.xml": "ERROR_SYNC_INVOICE_COMPANY_NOT_FOUND",
        # matches no purchase tax for intra-community K 0 %,
        "UBLBE_BE0000000196_V01-15000014.xml": "ERROR_SYNC_INVOICE_MAPPING_TAX_RATE_NOT_FOUND",
        **CASH_DISCOUNT_VAT,
    }


def test_corpus_mapped_mode_books_each_accepted_document_once(
    tryton_factory: Callable[[], TrytonServer], corpus: Path, tmp_path: Path
) -> None:
    files = _corpus_files(corpus)
    booked, rejected = asyncio.run(_book_corpus(tryton_factory(), tmp_path, MAPPING, files))
    assert len(booked) + len(rejected) == len(files)
    assert {name: reason.split(":")[0] for name, reason in rejected.items()} == CASH_DISCOUNT_VAT
