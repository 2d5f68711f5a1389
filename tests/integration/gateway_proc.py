"""The gateway as its users run it: `gateway db upgrade`, then `gateway run` as a child process.

Tests drive it only from outside (SMTP on a loopback port, the CLI, the files it writes), so
what passes here is what works for a sysadmin.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

from integration.servers import free_port, wait_for_port

T = TypeVar("T")
START_TIMEOUT = 20.0


# The demo dossier of the example config: auto-send into a local drop folder.
DEMO_DROP = """
[[integrations]]
name = "drop"
kind = "directory"
path = "var/outbox"

[[dossiers]]
slug = "demo"
vat = "BE0123456749"
addresses = ["demo@gateway.localhost"]
integration = "drop"
auto_send = true
"""


def base_config(
    port: int,
    extra: str = "",
    busy_timeout: float = 5.0,
    lease: float = 300,
    smtp_processes: int = 1,
    poll_interval: float = 0.2,
) -> str:
    """A config for a test: SQLite and blobs under the working directory, fast polling."""
    return f"""
[gateway]
state_dir = "var"
log_format = "json"
log_level = "debug"

[database]
url = "sqlite:///var/gateway.db"
busy_timeout = {busy_timeout}

[smtp]
host = "127.0.0.1"
port = {port}
processes = {smtp_processes}

[delivery]
poll_interval = {poll_interval}
retry_initial = 1.0
retry_max = 2.0
lease = {lease}

[metrics]
enabled = false
{extra}
"""


class Gateway:
    def __init__(self, workdir: Path, config_text: str, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.config = workdir / "gateway.toml"
        self.config.write_text(config_text)
        self.log = workdir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "-c", str(self.config), *args],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"gateway {' '.join(args)} exited {result.returncode}: {result.stderr}"
            )
        return result

    def start(self, env: dict[str, str] | None = None) -> None:
        self.cli("db", "upgrade")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "-c", str(self.config), "run"],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        try:
            wait_for_port("127.0.0.1", self.port, START_TIMEOUT, self.proc)
        except Exception as exc:
            self.stop()
            raise AssertionError(f"gateway did not start: {exc}\n{self.log_tail()}") from exc

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"gateway ignored SIGTERM\n{self.log_tail()}") from None

    def kill(self) -> None:
        """SIGKILL: no clean-up, as in a power cut or the OOM killer."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=15)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def docs(self) -> list[dict[str, Any]]:
        out = self.cli("doc", "list", "--json", "--limit", "100000").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_for(self, what: Callable[[], T | None], timeout: float = 10.0) -> T:
        deadline = time.monotonic() + timeout
        while True:
            found = what()
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s\n{self.log_tail()}")
            time.sleep(0.1)

    def send(self, message: EmailMessage, rcpts: list[str] | None = None) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            client.send_message(message, to_addrs=rcpts)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines of event `name`, the daemon's and its children's."""
        lines = self.log.read_text().splitlines()
        return [
            e for e in (json.loads(x) for x in lines if x.startswith("{")) if e["event"] == name
        ]

    def live_pids(self, ready_event: str) -> list[int]:
        """Processes that logged `ready_event` and still run (children of the daemon)."""
        ready = [e["pid"] for e in self.events(ready_event)]
        return sorted(pid for pid in ready if process_state(pid) not in ("gone", "Z"))


def process_state(pid: int) -> str:
    """The kernel's one-letter state of `pid` (Z: a zombie), or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def nice_values(pid: int) -> dict[int, int]:
    """Each thread's nice value (field 19 of its stat line)."""
    values = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        values[int(task.name)] = int(fields[16])
    return values


def mail(
    to: str, *attachments: tuple[str, bytes, str], sender: str = "s@example.com"
) -> EmailMessage:
    """A message with a text body and the given (filename, bytes, media type) attachments."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = "Documents"
    msg.set_content("Please find the documents attached.")
    for filename, data, media_type in attachments:
        maintype, subtype = media_type.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def start_gateway(workdir: Path, extra: str = "", **kwargs: Any) -> Gateway:
    port = free_port()
    gateway = Gateway(workdir, base_config(port, extra, **kwargs), port)
    gateway.start()
    return gateway
