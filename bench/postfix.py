"""A private Postfix instance for the benchmark: its own config, queue and data directories.

Another Postfix (the default one under /etc/postfix) may be serving tests on this machine; this
one never touches it: everything lives under a directory of ours, it listens on its own loopback
port only, and it is stopped with `postfix -c OURDIR stop`. Accepted mail goes through the queue
(cleanup writes and fsyncs the queue file before `250`) and is then delivered to discard(8), so
Postfix, like the gateway, keeps working on what it accepted while it accepts more.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/lib
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.localhost
mydestination = bench.localhost, gateway.localhost
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
local_transport = discard:bench
default_transport = discard:bench
alias_maps =
alias_database =
local_recipient_maps =
biff = no
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}
message_size_limit = 52428800
default_process_limit = 200
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
"""


class PrivatePostfix:
    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.etc = root / "etc"

    def start(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
        for sub in ("etc", "spool", "lib"):
            (self.root / sub).mkdir(parents=True)
        shutil.chown(self.root / "lib", "postfix")
        (self.etc / "main.cf").write_text(MAIN_CF.format(root=self.root))
        (self.etc / "master.cf").write_text(MASTER_CF.format(port=self.port))
        for name in ("dynamicmaps.cf", "postfix-files"):
            shutil.copy(Path("/etc/postfix") / name, self.etc / name)
        self._postfix("check")
        self._postfix("start")

    def stop(self) -> None:
        self._postfix("stop", check=False)
        time.sleep(0.5)

    def _postfix(self, *args: str, check: bool = True) -> None:
        done = subprocess.run(
            ["postfix", "-c", str(self.etc), *args], capture_output=True, timeout=60, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)}: {done.stderr.decode().strip()}")
