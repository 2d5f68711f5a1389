"""A real Dovecot IMAP server for the IMAP door's tests, in the style of `servers.py`.

Own config in a directory the test run owns, one Maildir account (uid `nobody`, as Dovecot
refuses uid 0), password from a passwd-file, listening on a free 127.0.0.1 port, stopped by
its PID. A second, implicit-TLS port carries a certificate from a `trustme` CA (`ca_file`).
`doveadm` runs against the same config to kick sessions or reset UIDVALIDITY.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import trustme
from integration.servers import (
    START_TIMEOUT,
    ServerStartError,
    ServerUnavailable,
    free_port,
    log_tail,
    stop_process,
    wait_for_port,
)

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"


@dataclass
class Dovecot:
    root: Path
    port: int
    proc: subprocess.Popen[bytes]
    tls_port: int = 0
    ca_file: str = ""
    user: str = "acct"
    password: str = "canary-7f3a-imap-pw"
    host: str = "127.0.0.1"

    @property
    def config(self) -> Path:
        return self.root / "dovecot.conf"

    def doveadm(self, *args: str, ok: tuple[int, ...] = (0,)) -> str:
        result = subprocess.run(
            [DOVEADM, "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode not in ok:
            raise AssertionError(f"doveadm {' '.join(args)}: {result.returncode} {result.stderr}")
        return result.stdout

    def kick(self) -> None:
        """Close every IMAP session of the account (exit 68 when there was none)."""
        self.doveadm("kick", self.user, ok=(0, 68))

    def reset_mailbox(self) -> None:
        """Empty every folder of the account, so each test starts from nothing."""
        self.kick()
        self.doveadm("expunge", "-u", self.user, "mailbox", "*", "all")

    def stop(self) -> None:
        stop_process(self.proc)


def _config(root: Path, port: int, tls_port: int) -> str:
    return f"""
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = {root}/passwd
}}
mail_location = maildir:~/Maildir
first_valid_uid = 1
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
"""


def start_dovecot(tmpdir: Path) -> Dovecot:
    """Needs root, as in RECIPES.md: the mailbox belongs to `nobody` (Dovecot refuses uid 0)."""
    if not Path(DOVECOT).exists():
        raise ServerUnavailable(DOVECOT, "dovecot-imapd")
    nobody = pwd.getpwnam("nobody")
    root = tmpdir
    os.chmod(root, 0o755)
    for parent in root.parents:  # Dovecot's auth and mail users must reach the files
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)
    for sub in ("mail", "run", "state"):
        (root / sub).mkdir(exist_ok=True)
    (root / "passwd").write_text(
        f"acct:{{PLAIN}}canary-7f3a-imap-pw:{nobody.pw_uid}:{nobody.pw_gid}::{root}/mail/acct\n"
    )
    (root / "mail" / "acct").mkdir(exist_ok=True)
    shutil.chown(root / "mail", nobody.pw_uid, nobody.pw_gid)
    shutil.chown(root / "mail" / "acct", nobody.pw_uid, nobody.pw_gid)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(root / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    port, tls_port = free_port(), free_port()
    (root / "dovecot.conf").write_text(_config(root, port, tls_port))
    log = open(root / "stderr.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(root / "dovecot.conf")], stdout=log, stderr=log
    )
    log.close()
    try:
        wait_for_port("127.0.0.1", port, START_TIMEOUT, proc)
    except Exception as exc:
        stop_process(proc)
        raise ServerStartError(
            f"dovecot did not start: {exc}\n{log_tail(root / 'dovecot.log')}"
        ) from exc
    return Dovecot(root, port, proc, tls_port, str(root / "ca.pem"))
