"""SFTP delivery to a real OpenSSH sshd: kept connections against a new one per file.

Both modes use the gateway's own `SftpAdapter` (temporary name, fsync, rename). "Kept" is
what the delivery workers do: one adapter per integration, whose pool of `IN_FLIGHT`
connections stays open between documents. "New per file" is a naive client: for every
document it connects, authenticates, uploads the same way and closes. Each mode delivers the
same number of small documents with `IN_FLIGHT` uploads at once.

A second table runs the delivery workers themselves (`bench/drain.py`): the same number of
documents queued in SQLite, drained to the sshd by the daemon's `DeliveryRunner`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import drain
from bench.common import start_sshd, table
from gateway.outbound.base import Outgoing
from gateway.outbound.kinds import SftpOptions
from gateway.outbound.sftp import SftpAdapter

IN_FLIGHT = 4
DOCUMENT = b"<?xml version='1.0'?><Invoice>" + b"x" * 1800 + b"</Invoice>\n"


def _item(mode: str, n: int) -> Outgoing:
    data = DOCUMENT.replace(b"<Invoice>", f"<Invoice n='{mode}-{n}'>".encode())
    return Outgoing(
        delivery_id=n,
        attempt_id=f"{mode}-{n}",
        document_id=n,
        dossier="bench",
        accounting_file_id="",
        doc_type="purchase_invoice",
        filename=f"{mode}-{n}.xml",
        media_type="application/xml",
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
    )


async def _deliver_all(
    count: int, deliver: Callable[[Outgoing], Awaitable[str]], mode: str
) -> float:
    queue: asyncio.Queue[Outgoing] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(_item(mode, n))

    async def worker() -> None:
        while not queue.empty():
            await deliver(queue.get_nowait())

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(IN_FLIGHT))), 1800)
    return time.monotonic() - started


async def _measure(options: SftpOptions, count: int) -> dict[str, float]:
    kept = SftpAdapter("kept", dataclasses.replace(options, concurrency=IN_FLIGHT))

    async def via_new(item: Outgoing) -> str:
        adapter = SftpAdapter("new", options)
        try:
            return await adapter.deliver(item)
        finally:
            await adapter.close()

    try:
        kept_seconds = await _deliver_all(count, kept.deliver, "kept")
    finally:
        await kept.close()
    new_seconds = await _deliver_all(count, via_new, "new")
    return {"kept": count / kept_seconds, "new": count / new_seconds}


def run(workdir: Path, count: int) -> str:
    sshd = start_sshd(workdir)
    try:
        options = SftpOptions(
            host=sshd.host,
            port=sshd.port,
            username=sshd.username,
            host_key=sshd.host_key_line,
            key_file=sshd.client_key,
        )
        rates = asyncio.run(_measure(options, count))
        landed = len(list((sshd.root / "Invoice_import").glob("*.xml")))
    finally:
        sshd.stop()
    rows = [
        [f"kept connections (one adapter, pool of {IN_FLIGHT})", f"{rates['kept']:.1f}"],
        ["new connection per file", f"{rates['new']:.1f}"],
        ["ratio kept / new", f"{rates['kept'] / rates['new']:.1f}"],
        ["files on the server (expected)", f"{landed} ({2 * count})"],
    ]
    adapter = table([f"SFTP, {count} documents of {len(DOCUMENT)} B", "documents/s"], rows)
    return adapter + "\n\n" + drain.run(workdir / "drain", count)
