"""Real mail receivers for the mailbox kind: Postfix delivering to Maildirs, and smtp-sink.

Postfix is the machine's default instance (`/etc/postfix`), reconfigured for loopback: one
smtpd on a free 127.0.0.1 port, the domain `books.test` as virtual mailboxes under our
directory (`<box>@books.test` → `<maildirs>/<box>/` for each of MAILBOXES), nothing relayed
anywhere. The master runs in the foreground (`master -d`) as our child; `postfix stop`, then
its PID, stop it.
`smtp-sink` (same package) answers with the faults a test asks for.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from integration.servers import (
    START_TIMEOUT,
    ServerStartError,
    ServerUnavailable,
    free_port,
    log_tail,
    stop_process,
    wait_for_port,
)

DOMAIN = "books.test"
# The mailboxes that exist at books.test; anything else is refused with 550 5.1.1.
MAILBOXES = ("purchase", "sales", "other", "bank", "default", "inbox-f42", "postmaster")


def shared_dir(prefix: str) -> Path:
    """A directory Postfix's and smtp-sink's unprivileged processes can reach.

    Not under pytest's basetemp: pytest makes `/tmp/pytest-of-<user>` 0700 whenever any test
    session starts on the machine, which would cut a running server off from its files.
    """
    path = Path(tempfile.mkdtemp(prefix=f"gateway-{prefix}-"))
    path.chmod(0o755)
    return path


def _postconf(*args: str) -> str:
    result = subprocess.run(
        ["postconf", *args], check=True, capture_output=True, text=True, timeout=START_TIMEOUT
    )
    return result.stdout


@dataclass
class Postfix:
    dir: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def maildirs(self) -> Path:
        return self.dir / "maildirs"

    @property
    def log(self) -> Path:
        return self.dir / "postfix.log"

    def messages(self, local_part: str) -> list[bytes]:
        """Everything delivered to `local_part@books.test`, oldest first."""
        new = self.maildirs / local_part / "new"
        if not new.is_dir():
            return []
        return [p.read_bytes() for p in sorted(new.iterdir(), key=lambda p: p.stat().st_mtime)]

    def wait_for(self, counts: dict[str, int], timeout: float = 20.0) -> None:
        """Until each mailbox holds its count; on timeout, the mail log says why not."""
        deadline = time.monotonic() + timeout
        while any(len(self.messages(box)) != n for box, n in counts.items()):
            if time.monotonic() > deadline:
                have = {box: len(self.messages(box)) for box in counts}
                raise AssertionError(
                    f"mailboxes hold {have}, expected {counts}\n{log_tail(self.log, 40)}"
                )
            time.sleep(0.05)

    def configure(self) -> None:
        nobody = pwd.getpwnam("nobody")
        self.maildirs.mkdir(parents=True, exist_ok=True)
        os.chown(self.maildirs, nobody.pw_uid, nobody.pw_gid)
        table = self.dir / "virtual_mailboxes"
        table.write_text("".join(f"{box}@{DOMAIN} {box}/\n" for box in MAILBOXES))
        _postconf(
            "-e",
            "inet_interfaces=loopback-only",
            "inet_protocols=ipv4",
            "mydestination=",
            "myhostname=postfix.localhost",
            f"virtual_mailbox_domains={DOMAIN}",
            f"virtual_mailbox_base={self.maildirs}",
            f"virtual_mailbox_maps=texthash:{table}",
            f"virtual_uid_maps=static:{nobody.pw_uid}",
            f"virtual_gid_maps=static:{nobody.pw_gid}",
            "default_transport=error",
            "relay_transport=error",
            "mynetworks=127.0.0.0/8",
            f"maillog_file_prefixes=/var,/dev/stdout,{self.dir}",
            f"maillog_file={self.log}",
            "message_size_limit=52428800",
            "virtual_mailbox_limit=0",
            "smtpd_banner=$myhostname ESMTP",
        )
        for line in _postconf("-M").splitlines():
            service = line.split()[0] if line.strip() else ""
            if (service == "smtp" and " inet " in line) or service.startswith("127.0.0.1:"):
                _postconf("-MX", f"{service}/inet")
        listener = f"{self.host}:{self.port}"
        _postconf("-M", f"{listener}/inet={listener} inet n - n - - smtpd")
        subprocess.run(["newaliases"], check=True, timeout=START_TIMEOUT, capture_output=True)

    def start(self) -> None:
        check = subprocess.run(["postfix", "check"], capture_output=True, text=True, timeout=60)
        if check.returncode != 0:
            raise ServerStartError(f"postfix check failed: {check.stderr}")
        with (self.dir / "master.out").open("ab") as out:
            # master -d stays in the foreground as our own child (`postfix start-fg` forks it
            # off a wrapper script, which would leave it orphaned when stopped).
            master = Path(_postconf("-h", "daemon_directory").strip()) / "master"
            self.proc = subprocess.Popen(
                [str(master), "-d"], stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        try:
            wait_for_port(self.host, self.port, START_TIMEOUT, self.proc)
        except (TimeoutError, ServerStartError) as exc:
            self.stop()
            raise ServerStartError(f"postfix did not start: {exc}\n{log_tail(self.log)}") from exc

    def stop(self) -> None:
        """`postfix stop` lets the master reap its children; then our child is waited for."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            subprocess.run(["postfix", "stop"], capture_output=True, timeout=START_TIMEOUT)
        stop_process(self.proc)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def start_postfix(tmpdir: Path | None = None) -> Postfix:
    for binary in ("postfix", "postconf", "smtp-sink"):
        if shutil.which(binary) is None:
            raise ServerUnavailable(binary, "postfix")
    if os.geteuid() != 0:
        raise ServerUnavailable("postfix (as root)", "postfix")
    server = Postfix(dir=tmpdir or shared_dir("postfix"))
    server.configure()
    server.start()
    return server


@dataclass
class SmtpSink:
    """`smtp-sink` answering every session the same way; `-d` keeps one file per message."""

    faults: list[str]
    dir: Path = field(default_factory=lambda: shared_dir("sink"))
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        (self.dir / "mail").mkdir(exist_ok=True)
        (self.dir / "mail").chmod(0o777)
        argv = ["smtp-sink", "-u", "nobody", "-d", f"{self.dir}/mail/%M%S.", *self.faults]
        with (self.dir / "sink.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [*argv, f"{self.host}:{self.port}", "16"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        wait_for_port(self.host, self.port, START_TIMEOUT, self.proc)

    def received(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted((self.dir / "mail").iterdir())]

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
