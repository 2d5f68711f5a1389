"""CPU per message of the bare SMTP receivers, the figure that decides the door's throughput.

`python -m bench.door_cpu [--messages N] [--rounds R] [--loads L,..] [--receivers K,..]` loads
each receiver of `bench.receivers` (aiosmtpd's stock DATA loop, the streaming reader with its
spool fsync, the SMTP door alone, durable) with `smtp-source`, 10 sessions, at 600 B, 60 KB and
5 MB of smtp-source's own lines, and at 60 KB and 5 MB of prose whose lines end in full stops
(`bench.text_mail`), and reads the receiver's user and system time from /proc before and after
(after a warm-up). The `invoice` load is the latency benchmark's instead: one ~7 KB Peppol
invoice mail (base64, unique Message-ID) per session, a new session every 1/`--rate` s
(`bench.latency`'s own client), the per-connection cost small mail pays. Throughput
moves with whatever else runs on the machine; CPU per message much less, and it is what one
core's worth of messages per second comes from. Rounds interleave the receivers; the table
gives the median of each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from bench import text_mail
from bench.common import free_port, median, stop_process, table
from bench.intake import python_receiver, trial, wait_idle
from bench.latency import load as paced_sessions

RECEIVERS = ("aiosmtpd", "streaming", "door")
# Label: (message size, whether it is prose with full stops rather than smtp-source's lines).
LOADS = {
    "600 B": (600, False),
    "60 KB": (60 * 1024, False),
    "5 MB": (5 * 1024 * 1024, False),
    "60 KB text": (60 * 1024, True),
    "5 MB text": (5 * 1024 * 1024, True),
}
# The latency benchmark's message, sent by its client, one session each (see `send`).
INVOICE = "invoice"
INVOICE_SIZE = 7 * 1024
SESSIONS = 10
WARM_UP = 50
HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system time of process `pid`, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / HZ, int(fields[12]) / HZ


Send = Callable[[int, int], bool]


def smtp_source(size: int, message_file: Path | None) -> Send:
    """`smtp-source`, SESSIONS sessions, `size` bytes of its own lines or `message_file`."""
    return lambda port, count: trial(port, size, SESSIONS, count, message_file) is not None


def invoices(rate: float) -> Send:
    """The latency benchmark's load: a session every 1/`rate` s, one invoice mail each."""
    first = iter(range(0, 10**9, 10**6))

    def send(port: int, count: int) -> bool:
        _, failed = asyncio.run(paced_sessions(port, rate, count / rate, next(first)))
        if failed:
            print(f"  {len(failed)} not accepted, first: {failed[0]}", flush=True)
        return not failed

    return send


def measure(kind: str, send: Send, messages: int, workdir: Path) -> tuple[float, float]:
    """(user, system) milliseconds of CPU per message of a fresh `kind` receiver."""
    port = free_port()
    proc = python_receiver(kind, port, workdir)
    try:
        send(port, WARM_UP)
        wait_idle(proc.pid)
        user, system = cpu_seconds(proc.pid)
        if not send(port, messages):
            raise RuntimeError(f"{kind} refused messages")
        wait_idle(proc.pid)
        user_after, system_after = cpu_seconds(proc.pid)
    finally:
        stop_process(proc)
    return 1000 * (user_after - user) / messages, 1000 * (system_after - system) / messages


def run(messages: int, rounds: int, loads: list[str], kinds: list[str], rate: float) -> str:
    figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for label in loads:
        size, text = LOADS[label] if label != INVOICE else (INVOICE_SIZE, False)
        count = max(40, messages * 60 * 1024 // max(size, 60 * 1024))
        for _ in range(rounds):
            for kind in kinds:
                with _workdir() as workdir:
                    if label == INVOICE:
                        send = invoices(rate)
                    else:
                        message_file = text_mail.write(workdir / "text.eml", size) if text else None
                        send = smtp_source(size, message_file)
                    figures.setdefault((kind, label), []).append(
                        measure(kind, send, count, workdir)
                    )
    rows = []
    for (kind, label), runs in figures.items():
        user = median([u for u, _ in runs])
        system = median([s for _, s in runs])
        rows.append([kind, label, f"{user:.2f}", f"{system:.2f}", f"{user + system:.2f}"])
    return table(["receiver", "size", "user ms/msg", "sys ms/msg", "total ms/msg"], rows)


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="door-cpu-") as name:
        yield Path(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1500, help="per trial at 600 B/60 KB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--loads", default=",".join(LOADS), help=f"comma-separated: %(default)s or {INVOICE}"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="sessions/s of the invoice load")
    parser.add_argument(
        "--receivers", default=",".join(RECEIVERS), help="comma-separated: %(default)s"
    )
    args = parser.parse_args()
    loads = [name.strip() for name in args.loads.split(",")]
    kinds = [name.strip() for name in args.receivers.split(",")]
    if not set(loads) <= {*LOADS, INVOICE} or not set(kinds) <= set(RECEIVERS):
        parser.error("unknown load or receiver")
    print(run(args.messages, args.rounds, loads, kinds, args.rate))


if __name__ == "__main__":
    main()
