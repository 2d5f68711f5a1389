"""The delivery workers alone at a steady rate: document queued -> file renamed in sshd's drop.

As the rules stage does in a process of its own (`daemon.rules_process`), another process
queues one document at a time (its own transaction, then a wake-up the runner's loop reads, as
the daemon reads its children's), every 1/rate seconds whatever the workers do. In a thread of
the runner's process it fell far behind its rate (one document per transaction, each statement
waiting for the interpreter lock the runner's threads hold) and slowed the runner in turn. The
clock starts when the queueing transaction has committed and stops at the delivered file's
ctime, which the server's rename sets; the drop is only counted while documents arrive and its
ctimes read once at the end, as statting every file at each poll cost the runner's process
more than some of what it measures. No SMTP and no rules stage: this is delivery's share of the
end-of-DATA latency, with the daemon's default delivery settings. The CPU per document is the
runner's own threads' (event loop and database); its rounds per document are the commits on
its engine, each costing a transaction whatever it holds. As in `bench/latency.py`, sixteen
uncounted documents go first, so the SFTP connections are open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import multiprocessing
import os
import socket
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from sqlalchemy import event, select

from bench.common import start_sshd, table
from bench.latency import percentile
from gateway.config import DeliverySettings
from gateway.logging import configure
from gateway.outbound import queue
from gateway.outbound.worker import DeliveryRunner
from gateway.store import blob_rows
from gateway.store.db import Store, open_store, upgrade
from gateway.store.models import DocType, Document, Dossier, Integration

DOCUMENT = b"<?xml version='1.0'?><Invoice>" + b"x" * 1800 + b"</Invoice>\n"
LAND_TIMEOUT = 120.0
WARM_UP = 16
TICK = os.sysconf("SC_CLK_TCK")


def _documents(store: Store, options: dict[str, object], count: int) -> list[int]:
    """Inbox documents with their bytes stored as blob rows: what the rules stage has made of
    small documents before it queues them."""
    with store.session.begin() as session:
        integration = Integration(name="drop", kind="sftp", options=options)
        dossier = Dossier(slug="bench", integration=integration, vat_number="BE0123456749")
        docs = []
        for n in range(count):
            data = DOCUMENT.replace(b"<Invoice>", f"<Invoice n='{n}'>".encode())
            digest = hashlib.sha256(data).hexdigest()
            blob_rows.insert(session.connection(), [(digest, data)])
            doc = Document(
                dossier=dossier,
                filename=f"paced-{n}.xml",
                media_type="application/xml",
                blob_sha256=digest,
                size=len(data),
                doc_type=DocType.PURCHASE_INVOICE,
            )
            session.add(doc)
            docs.append(doc)
        session.flush()
        return [doc.id for doc in docs]


def _pace(
    url: str, blobs: Path, ids: list[int], rate: float, wake: socket.socket, out: Connection
) -> None:
    """In a process of its own: queue `ids` one per 1/rate s (open loop), waking the runner
    after each; send back when each queueing committed, in ns."""
    store = open_store(url, blobs)
    wake.setblocking(False)
    queued: dict[int, int] = {}
    settings = DeliverySettings()
    started = time.monotonic()
    for n, doc_id in enumerate(ids):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        with store.session.begin() as session:
            doc = session.scalars(select(Document).where(Document.id == doc_id)).one()
            queue.send(session, doc, settings)
        queued[doc_id] = time.time_ns()
        with contextlib.suppress(BlockingIOError):  # full: the runner has wake-ups to read
            wake.send(b"w")
    store.engine.dispose()
    out.send(queued)


def _landed(drop: Path) -> dict[int, int]:
    if not drop.is_dir():
        return {}
    return {int(p.name.split("-", 1)[0]): p.stat().st_ctime_ns for p in drop.glob("*.xml")}


def _count(drop: Path) -> int:
    with contextlib.suppress(FileNotFoundError):
        return sum(1 for name in os.listdir(drop) if name.endswith(".xml"))
    return 0


def _runner_cpu() -> float:
    """utime+stime of the threads the runner uses: this one (its loop) and its database's."""
    total = 0
    for thread in threading.enumerate():
        if thread is threading.current_thread() or thread.name.startswith("delivery-db"):
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / TICK


async def _measure(
    store: Store, ids: list[int], rate: float, drop: Path
) -> tuple[dict[int, int], dict[int, int], float, int]:
    """When each document was queued and landed, the runner's CPU seconds and its commits
    (one per round), over the counted documents."""
    runner = DeliveryRunner(store, DeliverySettings())
    task = asyncio.create_task(runner.run())
    commits = [0]

    def count(_connection: object) -> None:
        commits[0] += 1

    try:
        await asyncio.sleep(0.5)  # the runner's first round, on an empty queue
        await _paced(store, runner, ids[:WARM_UP], WARM_UP, drop, task)
        cpu = _runner_cpu()
        event.listen(store.engine, "commit", count)
        queued = await _paced(store, runner, ids[WARM_UP:], rate, drop, task)
        event.remove(store.engine, "commit", count)
        cpu = _runner_cpu() - cpu
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return queued, _landed(drop), cpu, commits[0]


async def _paced(
    store: Store,
    runner: DeliveryRunner,
    ids: list[int],
    rate: float,
    drop: Path,
    task: asyncio.Task[None],
) -> dict[int, int]:
    """Queue `ids` at `rate` from another process and wait until each has landed (or the
    wait ends)."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    results, out = multiprocessing.Pipe(duplex=False)
    context = multiprocessing.get_context("spawn")
    url, blobs = store.engine.url.render_as_string(), store.blobs.root
    pacer = context.Process(target=_pace, args=(url, blobs, ids, rate, theirs, out))
    loop.add_reader(ours.fileno(), _woken, ours, runner)
    pacer.start()
    try:
        deadline = time.monotonic() + len(ids) / rate + LAND_TIMEOUT
        before = await asyncio.to_thread(_count, drop)
        while time.monotonic() < deadline:
            if task.done():
                task.result()
            landed = await asyncio.to_thread(_count, drop)
            if results.poll() and landed - before >= len(ids):
                break
            await asyncio.sleep(0.2)
        queued: dict[int, int] = await asyncio.to_thread(results.recv)
    finally:
        loop.remove_reader(ours.fileno())
        await asyncio.to_thread(pacer.join, LAND_TIMEOUT)
        for end in (ours, theirs, results, out):
            end.close()
    return queued


def _woken(wakes: socket.socket, runner: DeliveryRunner) -> None:
    """The pacer's wake-ups, read on the runner's loop: all that came, one `wake`."""
    with contextlib.suppress(BlockingIOError):
        while wakes.recv(64):
            pass
    runner.wake.set()


def run(workdir: Path, rate: float, seconds: float) -> str:
    # The daemon's production logging (a JSON line per event, its cost included), discarded.
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        configure("info", "json")
        return _run(workdir, rate, seconds)


def _run(workdir: Path, rate: float, seconds: float) -> str:
    sshd = start_sshd(workdir / "sshd")
    store = open_store(f"sqlite:///{workdir}/paced.db", workdir / "blobs")
    try:
        upgrade(store.engine)
        options: dict[str, object] = {
            "host": sshd.host,
            "port": sshd.port,
            "username": sshd.username,
            "key_file": str(sshd.client_key),
            "host_key": sshd.host_key_line,
            "upload_path": "Paced_import/",
        }
        ids = _documents(store, options, WARM_UP + int(rate * seconds))
        queued, landed, cpu, commits = asyncio.run(
            _measure(store, ids, rate, sshd.root / "Paced_import")
        )
    finally:
        store.engine.dispose()
        sshd.stop()
    millis = [(landed[d] - at) / 1e6 for d, at in queued.items() if d in landed]
    rows = [
        ["documents queued / files landed", f"{len(queued)} / {len(millis)}"],
        ["p50 (ms)", f"{percentile(millis, 0.50):.0f}"],
        ["p90 (ms)", f"{percentile(millis, 0.90):.0f}"],
        ["p99 (ms)", f"{percentile(millis, 0.99):.0f}"],
        ["max (ms)", f"{max(millis, default=float('nan')):.0f}"],
        ["delivery CPU per document (ms)", f"{1000 * cpu / max(len(millis), 1):.2f}"],
        ["delivery rounds (commits) per document", f"{commits / max(len(millis), 1):.2f}"],
    ]
    title = f"delivery alone: queued -> renamed in sshd drop, {rate:.0f} docs/s for {seconds:.0f} s"
    return table([title, "value"], rows)
