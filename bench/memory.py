"""Peak memory of the full gateway taking ten 20 MB messages at once.

Each message carries one ~20 MB binary attachment (base64, as mail clients send it). The
gateway's peak resident set (VmHWM) is read from /proc after every message has been accepted
and the rules stage has gone idle, so it covers intake and processing alike.
"""

from __future__ import annotations

import os
import smtplib
import threading
import time
from email.message import EmailMessage
from pathlib import Path

from bench.common import (
    INTAKE_ADDRESS,
    PROCESS_COUNTS,
    free_port,
    full_gateway,
    stop_process,
    table,
)
from bench.intake import python_receiver, wait_idle

MESSAGES = 10
ATTACHMENT = 15 * 1024 * 1024  # base64 grows it by 4/3: about 20 MB on the wire
TIMEOUT = 600.0
# Time for listener processes to start before the load begins.
LISTENERS_START = 3.0


def _message(n: int, payload: bytes) -> bytes:
    msg = EmailMessage()
    msg["From"] = "big@example.com"
    msg["To"] = INTAKE_ADDRESS
    msg["Subject"] = f"big {n}"
    msg["Message-ID"] = f"<big-{n}-{os.getpid()}@bench>"
    msg.set_content("A large scan.")
    msg.add_attachment(payload, maintype="application", subtype="pdf", filename=f"scan-{n}.pdf")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def _status_kb(pid: int, field: str, name: str = "status") -> int:
    for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def send_all(port: int, raws: list[bytes]) -> int:
    """Send every message at once, one session each; return how many were not accepted."""
    errors: list[BaseException] = []

    def send(raw: bytes) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                client.sendmail("big@example.com", [INTAKE_ADDRESS], raw)
        except (OSError, smtplib.SMTPException) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(raw,)) for raw in raws]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    return len(errors)


def family(pid: int) -> list[int]:
    """`pid` and its children: the daemon and its SMTP listener processes."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return [pid, *children]


class PssSampler:
    """The largest sum of proportional set sizes seen across `pids`, sampled every 50 ms.

    Resident sets count the pages processes share (the interpreter, libraries) once per
    process, so their sum overstates a daemon with listeners; PSS splits shared pages among
    the processes that map them. The kernel keeps no peak of it, hence the sampling.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            total = 0
            for pid in family(self.pid):
                try:
                    total += _status_kb(pid, "Pss", "smaps_rollup")
                except (OSError, KeyError):
                    continue
            self.peak = max(self.peak, total)


def measure(pid: int, port: int, raws: list[bytes]) -> tuple[int, int, int, int]:
    """RSS before (kB), peak RSS and peak PSS after everything settled (kB), messages not
    accepted. A daemon with listener processes counts them all: its peak RSS is the sum of
    theirs (an upper bound), its PSS the sampled peak of their sum."""
    wait_idle(pid)
    before = sum(_status_kb(p, "VmRSS") for p in family(pid))
    with PssSampler(pid) as pss:
        failed = send_all(port, raws)
        wait_idle(pid)
    return before, sum(_status_kb(p, "VmHWM") for p in family(pid)), pss.peak, failed


def run(workdir: Path) -> str:
    raws = [_message(n, os.urandom(ATTACHMENT)) for n in range(MESSAGES)]
    rows = []
    port = free_port()
    door = python_receiver("door", port, workdir)
    try:
        before, peak, pss, failed = measure(door.pid, port, raws)
        rows.append(["gateway SMTP door alone (streaming, durable)", before, peak, pss, failed])
    finally:
        stop_process(door)
    for processes in PROCESS_COUNTS:
        gateway, name = full_gateway(workdir, processes)
        try:
            assert gateway.proc is not None
            time.sleep(LISTENERS_START)
            fresh = [_renamed(r, processes) for r in raws]
            before, peak, pss, failed = measure(gateway.proc.pid, gateway.port, fresh)
            rows.append([name, before, peak, pss, failed])
        finally:
            gateway.stop()
    header = [
        f"{MESSAGES} messages of {len(raws[0]) / 1e6:.1f} MB at once",
        "RSS before (MB)",
        "peak RSS (MB)",
        "peak PSS (MB)",
        "not accepted",
    ]
    shown = [
        [n, f"{b / 1024:.0f}", f"{p / 1024:.0f}", f"{q / 1024:.0f}", f] for n, b, p, q, f in rows
    ]
    return table(header, shown) + "\n\ntarget: peak RSS < 200 MB"


def _renamed(raw: bytes, processes: int) -> bytes:
    return raw.replace(b"@bench>", f"@bench.full{processes}>".encode(), 1)
