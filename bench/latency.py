"""End of DATA to a file renamed into a real sshd's drop folder, at a steady message rate.

Open loop: a new SMTP session starts every 1/rate seconds whatever the gateway does, each
carrying one Peppol invoice (a unique number), so every message becomes a document that the
workers deliver over SFTP. The clock starts when the client has written the final `.CRLF` and
stops at the delivered file's ctime, which the server's rename sets (kernel clock, a few ms
coarse). Messages whose file has not landed within the wait are reported, not dropped.
Sixteen warm-up messages go through first, uncounted, so the SFTP connections are open.
The gateway runs the daemon's default delivery settings (workers, SFTP concurrency); with
`--smtp-processes` above 1 the rules stage runs in a process of its own too; with `--split`, a
single SMTP door and the rules stage each run in a process of their own. CPU per message
is each process's user+system time over the run, by role (daemon, listeners, rules stage).
A second table (`bench/paced.py`) times the delivery workers alone at the same rate.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

from bench.common import (
    INTAKE_ADDRESS,
    REPO,
    Gateway,
    cpu_by_role,
    free_port,
    gateway_config,
    start_sshd,
    table,
)
from gateway.config import DeliverySettings

INVOICE = (REPO / "tests" / "data" / "purchase-invoice-demo.xml").read_bytes()
LAND_TIMEOUT = 180.0
# Messages delivered before the clock starts, numbered apart: the workers' SFTP connections are
# open then, as in steady operation, so a handshake does not count as a message's latency.
WARM_UP = 16
WARM_UP_FIRST = 900_000
# Time for child processes to start before the load begins.
SETTLE = 3.0


def _message(n: int) -> bytes:
    invoice = INVOICE.replace(b"INV-2026-0042", f"INV-LAT-{n:06d}".encode())
    encoded = base64.encodebytes(invoice).replace(b"\n", b"\r\n")
    return (
        (
            f"From: lat@example.com\r\nTo: {INTAKE_ADDRESS}\r\nSubject: invoice {n}\r\n"
            f"Message-ID: <lat-{n}-{time.time_ns()}@bench>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nInvoice attached.\r\n"
            f"--b\r\nContent-Type: application/xml\r\nContent-Disposition: attachment; "
            f'filename="lat-{n}.xml"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        ).encode()
        + encoded
        + b"--b--\r\n"
    )


class _Session(asyncio.Protocol):
    """One SMTP session driven from its replies: each command leaves when the reply to the one
    before it is complete, as from a client without pipelining. A protocol, not streams and a
    task per session: the load runs on the same two cores as the gateway, so the client should
    cost as little CPU per message as it can (it is about half of what streams cost)."""

    def __init__(self, commands: list[bytes], done: asyncio.Future[tuple[bytes, int]]) -> None:
        self._commands = commands
        self._done = done
        self._pending = b""
        self._end = 0
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._pending += data
        while (cut := self._pending.find(b"\r\n")) >= 0:
            line, self._pending = self._pending[: cut + 2], self._pending[cut + 2 :]
            if line[3:4] != b"-":
                self._replied(line)

    def _replied(self, reply: bytes) -> None:
        assert self._transport is not None
        if self._done.done():
            return
        if not self._commands or reply[:1] not in (b"2", b"3"):
            self._transport.write(b"QUIT\r\n")
            self._transport.close()
            self._done.set_result((reply, self._end))
            return
        self._transport.write(self._commands.pop(0))
        if not self._commands:
            self._end = time.time_ns()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result((b"connection lost: " + str(exc).encode(), 0))


async def _send(port: int, n: int, message: bytes, ends: dict[int, int], failed: list[str]) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[bytes, int]] = loop.create_future()
    commands = [
        b"EHLO bench\r\n",
        b"MAIL FROM:<lat@example.com>\r\n",
        f"RCPT TO:<{INTAKE_ADDRESS}>\r\n".encode(),
        b"DATA\r\n",
        message + b".\r\n",
    ]
    try:
        await loop.create_connection(lambda: _Session(commands, done), "127.0.0.1", port)
    except OSError as exc:
        failed.append(f"{n}: {exc}")
        return
    reply, end = await done
    if reply.startswith(b"250") and end:
        ends[n] = end
    else:
        failed.append(f"{n}: {reply!r}")


async def load(
    port: int, rate: float, seconds: float, first: int = 0
) -> tuple[dict[int, int], list[str]]:
    """A session every 1/`rate` s for `seconds`; the messages are built before the first."""
    ends: dict[int, int] = {}
    failed: list[str] = []
    tasks = []
    total = int(rate * seconds)
    messages = [_message(first + i) for i in range(total)]
    started = time.monotonic()
    for i, message in enumerate(messages):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_send(port, first + i, message, ends, failed)))
    await asyncio.wait_for(asyncio.gather(*tasks), LAND_TIMEOUT)
    return ends, failed


def _landed(drop: Path) -> dict[int, int]:
    found = {}
    for path in drop.glob("*-lat-*.xml"):
        n = int(path.name.rsplit("-", 1)[1].removesuffix(".xml"))
        found[n] = path.stat().st_ctime_ns
    return found


def _wait_landed(drop: Path, wanted: set[int]) -> dict[int, int]:
    deadline = time.monotonic() + LAND_TIMEOUT
    landed = _landed(drop) if drop.exists() else {}
    while not wanted <= landed.keys() and time.monotonic() < deadline:
        time.sleep(0.5)
        landed = _landed(drop) if drop.exists() else {}
    return landed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run(
    workdir: Path, rate: float, seconds: float, smtp_processes: int = 1, split: bool = False
) -> str:
    sshd = start_sshd(workdir / "sshd")
    try:
        integration = f"""
[[integrations]]
name = "drop"
kind = "sftp"
host = "{sshd.host}"
port = {sshd.port}
username = "{sshd.username}"
key_file = "{sshd.client_key}"
host_key = "{sshd.host_key_line}"
"""
        port = free_port()
        (workdir / "gateway").mkdir()
        workers = DeliverySettings().workers
        config = gateway_config(port, integration, workers, smtp_processes, split)
        gateway = Gateway(workdir / "gateway", config, port)
        gateway.start()
        assert gateway.proc is not None
        try:
            time.sleep(SETTLE)
            drop = sshd.root / "Invoice_import"
            warm, _ = asyncio.run(load(port, WARM_UP, 1, WARM_UP_FIRST))
            _wait_landed(drop, set(warm))
            cpu_before = cpu_by_role(gateway.proc.pid)
            ends, failed = asyncio.run(load(port, rate, seconds))
            landed = _wait_landed(drop, set(ends))
            cpu = cpu_by_role(gateway.proc.pid)
        finally:
            gateway.stop()
    finally:
        sshd.stop()
    millis = [(landed[n] - end) / 1e6 for n, end in ends.items() if n in landed]
    rows = [
        ["messages sent / accepted", f"{int(rate * seconds)} / {len(ends)}"],
        ["not accepted", str(len(failed))],
        ["files landed", str(len(millis))],
        ["p50 (ms)", f"{percentile(millis, 0.50):.0f}"],
        ["p90 (ms)", f"{percentile(millis, 0.90):.0f}"],
        ["p99 (ms)", f"{percentile(millis, 0.99):.0f}"],
        ["max (ms)", f"{max(millis, default=float('nan')):.0f}"],
        ["target p99 (ms)", "< 250"],
    ]
    for role, seconds_used in cpu.items():
        per_message = (seconds_used - cpu_before.get(role, 0.0)) * 1000 / max(len(ends), 1)
        rows.append([f"CPU ms/msg, {role}", f"{per_message:.1f}"])
    for reason in failed[:3]:
        print(f"  not accepted: {reason}")
    rules = ", rules stage in its own process" if smtp_processes > 1 or split else ""
    where = " (not the daemon)" if split and smtp_processes == 1 else ""
    title = (
        f"end of DATA -> renamed in sshd drop, {rate:.0f} msgs/s for {seconds:.0f} s, "
        f"{smtp_processes} SMTP process(es){where}{rules}"
    )
    from bench import paced  # it imports `percentile` from here

    alone = paced.run(workdir / "paced", rate, seconds)
    return table([title, "value"], rows) + "\n\n" + alone
