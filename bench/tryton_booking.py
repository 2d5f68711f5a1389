"""How long one invoice takes to book into a real Tryton, per mode (a figure, not a test).

    .venv/bin/python bench/tryton_booking.py [TEMPLATE_DIR]

Builds the test template (or reuses TEMPLATE_DIR), starts one trytond on loopback, and books
every UBL document of the corpus through the adapter, first in e-document then in mapped mode
(each on its own server), printing median and worst latency per booking and per repeat delivery.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from corpus_dir import CORPUS
from integration.tryton_helpers import MAPPING, adapter, outgoing
from integration.tryton_server import (
    TrytonServer,
    TrytonTemplate,
    build_template,
    start_tryton,
)

from gateway.outbound.base import RejectedError


async def _run(server: TrytonServer, workdir: Path, mapping: dict[str, object]) -> None:
    files = sorted((CORPUS / "peppol-bis3").glob("*.xml")) + sorted((CORPUS / "efff").glob("*.xml"))
    books = adapter(server, workdir, mapping)
    first, again, rejected = [], [], 0
    try:
        for number, path in enumerate(files, start=1):
            item = outgoing(path.read_bytes(), filename=path.name, document_id=number)
            started = time.perf_counter()
            try:
                await books.deliver(item)
            except RejectedError:
                rejected += 1
                continue
            first.append(time.perf_counter() - started)
            started = time.perf_counter()
            await books.deliver(item)
            again.append(time.perf_counter() - started)
    finally:
        await books.close()
    print(
        f"{mapping['mode']:<11} {len(first)} booked, {rejected} rejected; booking median"
        f" {statistics.median(first) * 1000:.0f} ms, max {max(first) * 1000:.0f} ms; repeat"
        f" (found) median {statistics.median(again) * 1000:.0f} ms"
    )


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-tryton-"))
    if len(sys.argv) > 1 and TrytonTemplate(Path(sys.argv[1])).sqlite.is_file():
        template = TrytonTemplate(Path(sys.argv[1]))
    else:
        started = time.perf_counter()
        template = build_template(work / "template")
        print(f"template built in {time.perf_counter() - started:.1f} s")
    for mode in ("e-document", "mapped"):
        started = time.perf_counter()
        server = start_tryton(template, work / mode)
        print(f"server started in {time.perf_counter() - started:.2f} s")
        try:
            asyncio.run(_run(server, work, {**MAPPING, "mode": mode}))
        finally:
            started = time.perf_counter()
            server.stop()
            print(f"server stopped in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
