"""Peak memory of the full gateway taking ten 20 MB messages at once.

Each message carries one ~20 MB binary attachment (base64, as mail clients send it). The
gateway's peak resident set (VmHWM) is read from /proc after every message has been accepted
and the rules stage has gone idle, so it covers intake and processing alike.
"""

from __future__ import annotations

import os
import smtplib
import threading
from email.message import EmailMessage
from pathlib import Path

from bench.common import (
    DIRECTORY_DROP,
    INTAKE_ADDRESS,
    REPO,
    Gateway,
    free_port,
    gateway_config,
    stop_process,
    table,
)
from bench.intake import python_receiver, wait_idle

MESSAGES = 10
ATTACHMENT = 15 * 1024 * 1024  # base64 grows it by 4/3: about 20 MB on the wire
TIMEOUT = 600.0


def _message(n: int, payload: bytes) -> bytes:
    msg = EmailMessage()
    msg["From"] = "big@example.com"
    msg["To"] = INTAKE_ADDRESS
    msg["Subject"] = f"big {n}"
    msg["Message-ID"] = f"<big-{n}-{os.getpid()}@bench>"
    msg.set_content("A large scan.")
    msg.add_attachment(payload, maintype="application", subtype="pdf", filename=f"scan-{n}.pdf")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
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


def measure(pid: int, port: int, raws: list[bytes]) -> tuple[int, int, int]:
    """RSS before (kB), peak RSS after everything settled (kB), messages not accepted."""
    wait_idle(pid)
    before = _status_kb(pid, "VmRSS")
    failed = send_all(port, raws)
    wait_idle(pid)
    return before, _status_kb(pid, "VmHWM"), failed


def run(workdir: Path) -> str:
    # The gateway runs from the work directory: make it import this checkout, not another
    # installed copy of the package.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
    )
    raws = [_message(n, os.urandom(ATTACHMENT)) for n in range(MESSAGES)]
    rows = []
    port = free_port()
    door = python_receiver("door", port, workdir)
    try:
        before, peak, failed = measure(door.pid, port, raws)
        rows.append(["gateway SMTP door alone (streaming, durable)", before, peak, failed])
    finally:
        stop_process(door)
    port = free_port()
    (workdir / "gateway").mkdir()
    gateway = Gateway(workdir / "gateway", gateway_config(port, DIRECTORY_DROP), port)
    gateway.start()
    try:
        assert gateway.proc is not None
        before, peak, failed = measure(gateway.proc.pid, port, [_renamed(r) for r in raws])
        rows.append(["full gateway: door, rules stage, workers", before, peak, failed])
    finally:
        gateway.stop()
    header = [
        f"{MESSAGES} messages of {len(raws[0]) / 1e6:.1f} MB at once",
        "RSS before (MB)",
        "peak RSS (MB)",
        "not accepted",
    ]
    shown = [[name, f"{b / 1024:.0f}", f"{p / 1024:.0f}", f] for name, b, p, f in rows]
    return table(header, shown) + "\n\ntarget: peak RSS < 200 MB"


def _renamed(raw: bytes) -> bytes:
    return raw.replace(b"@bench>", b"@bench.full>", 1)
