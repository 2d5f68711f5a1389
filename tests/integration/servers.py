"""Real servers for integration tests: OpenSSH sshd and PostgreSQL on loopback ports.

Each server is a child of the test run, started in a directory the test owns, listening on
127.0.0.1 only, and stopped by its PID. Nothing here imports pytest, so the helpers can also be
used from a shell or a benchmark.
"""

from __future__ import annotations

import contextlib
import getpass
import glob
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
POSTGRES_GLOB = "/usr/lib/postgresql/*/bin/initdb"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class ServerUnavailable(RuntimeError):
    """A server binary is not installed; the caller decides between skip and fail."""

    def __init__(self, binary: str, package: str) -> None:
        super().__init__(f"{binary} is not installed (Debian package {package})")
        self.binary = binary
        self.package = package


class ServerStartError(RuntimeError):
    """A server is installed but did not come up (start() adds its log tail to the message)."""


def free_port() -> int:
    """Ask the kernel for an unused loopback port, so parallel runs never collide on a fixed one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until something accepts on host:port; a server that died is reported at once."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise ServerStartError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def log_tail(path: Path, lines: int = 20) -> str:
    """The end of a server log, so a start-up failure explains itself in the test report."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def _read_text(path: Path) -> str:
    """File contents, or "" while the file does not exist yet."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, wait, then SIGKILL: a hung server must not outlive the test run."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def _keygen(path: Path) -> None:
    """A fresh passwordless ed25519 key pair; ssh-keygen refuses to overwrite, so clear first."""
    path.unlink(missing_ok=True)
    path.with_suffix(".pub").unlink(missing_ok=True)
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        timeout=START_TIMEOUT,
    )


@dataclass
class Sshd:
    """An OpenSSH sshd serving SFTP only, with its session starting in `root`.

    `ForceCommand internal-sftp -d ROOT` makes relative paths such as `Invoice_import/x.xml`
    land under `root` whatever account logs in, which is how a package's drop folder behaves.
    """

    dir: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    username: str = field(default_factory=getpass.getuser)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def client_key(self) -> Path:
        return self.dir / "clientkey"

    @property
    def host_key(self) -> Path:
        return self.dir / "hostkey"

    @property
    def config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def log(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def pidfile(self) -> Path:
        return self.dir / "sshd.pid"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("sshd is not running")
        return self.proc.pid

    @property
    def host_key_line(self) -> str:
        """`ssh-ed25519 AAAA...`: what a client pins; re-read so it follows a key change."""
        return " ".join(self.host_key.with_suffix(".pub").read_text().split()[:2])

    def prepare(self) -> None:
        """Keys, drop root and config; separate from start so a restart can keep them."""
        (self.root / "Invoice_import").mkdir(parents=True, exist_ok=True)
        _keygen(self.host_key)
        _keygen(self.client_key)
        shutil.copyfile(self.client_key.with_suffix(".pub"), self.dir / "authorized_keys")
        self.config.write_text(
            f"Port {self.port}\n"
            f"ListenAddress {self.host}\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {self.pidfile}\n"
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "Subsystem sftp internal-sftp\n"
            f"ForceCommand internal-sftp -d {self.root}\n"
        )

    def start(self) -> None:
        """Run sshd in the foreground (-D) as our child, logging to a file (-e), and wait."""
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege-separation dir
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        try:
            self._wait_pidfile()
            wait_for_port(self.host, self.port, START_TIMEOUT, self.proc)
        except (TimeoutError, ServerStartError) as exc:
            self.stop()
            raise ServerStartError(f"sshd did not start: {exc}\n{log_tail(self.log)}") from exc

    def _wait_pidfile(self) -> None:
        """sshd writes its PidFile after binding: proof the port is ours, not another server's."""
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while _read_text(self.pidfile).strip() != str(self.proc.pid):
            if self.proc.poll() is not None:
                raise ServerStartError(f"sshd exited with {self.proc.returncode}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"sshd wrote no {self.pidfile} within {START_TIMEOUT}s")
            time.sleep(0.05)

    def restart_with_new_host_key(self) -> None:
        """Same port, new host key: what a client sees when the server was reinstalled."""
        self.stop()
        _keygen(self.host_key)
        self.start()

    def stop(self) -> None:
        """Stop by PID; safe to call twice and after a failed start."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


def start_sshd(tmpdir: Path) -> Sshd:
    """A running SFTP drop server in tmpdir; raises ServerUnavailable if sshd is missing."""
    for binary, package in ((SSHD, "openssh-server"), (SSH_KEYGEN, "openssh-client")):
        if shutil.which(binary) is None:
            raise ServerUnavailable(binary, package)
    server = Sshd(dir=tmpdir)
    server.prepare()
    server.start()
    return server


def postgres_bindir() -> Path:
    """The highest Debian PostgreSQL version installed: that is what a new machine would run."""
    found = [Path(p).parent for p in glob.glob(POSTGRES_GLOB)]
    if not found:
        raise ServerUnavailable(POSTGRES_GLOB.replace("*", "<version>"), "postgresql")
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def _as_postgres() -> dict[str, Any]:
    """Popen arguments dropping root to `postgres`: PostgreSQL refuses to run as root.

    Switching user in Popen (not via runuser or pg_ctl) keeps the postmaster our direct child,
    so we reap it; an orphan would stay a zombie where PID 1 does not reap.
    """
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam("postgres")
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _open_path_for_postgres(path: Path) -> None:
    """Let the postgres user reach `path`: pytest's and mktemp's dirs under /tmp are 0700."""
    if os.geteuid() != 0:
        return
    shutil.chown(path, user="postgres")
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH | stat.S_IROTH)


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster, user `gw` with trust auth, on 127.0.0.1 only."""

    dir: Path
    bindir: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    user: str = "gw"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def log(self) -> Path:
        return self.dir / "postgres.log"

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("postgres is not running")
        return self.proc.pid

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        """Run a PostgreSQL tool, raising with its output and the server log if it fails."""
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.dir,
            timeout=START_TIMEOUT,
            **_as_postgres(),
        )
        if result.returncode != 0:
            raise ServerStartError(
                f"{args[0]} failed ({result.returncode}): {result.stdout}{result.stderr}\n"
                f"{log_tail(self.log)}"
            )

    def _connect(self, host: str | None = None) -> psycopg.Connection[Any]:
        """An autocommit admin session; connect_timeout so a silent listener cannot hang us."""
        return psycopg.connect(
            host=host or self.host,
            port=self.port,
            user=self.user,
            dbname="postgres",
            autocommit=True,
            connect_timeout=5,
        )

    def start(self) -> None:
        """initdb without fsync (a test cluster need not survive power loss), run, wait."""
        self.dir.mkdir(parents=True, exist_ok=True)
        _open_path_for_postgres(self.dir)
        self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "--no-sync",
            "--encoding=UTF8", "--locale=C.UTF-8",  # same on every machine, whatever LANG says
        )  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-k", str(self.dir), "-c", f"listen_addresses={self.host}", "-c", "fsync=off"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.dir,
                **_as_postgres(),
            )  # fmt: skip
        try:
            self._wait_ready()
        except (TimeoutError, ServerStartError) as exc:
            self.stop()
            raise ServerStartError(f"postgres did not start: {exc}\n{log_tail(self.log)}") from exc

    def _wait_ready(self) -> None:
        """Poll until a login works over our own unix socket.

        An open TCP port may still answer 'starting up', or belong to someone else; the socket
        in our directory exists only once our postmaster has bound its TCP port too.
        """
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerStartError(f"postgres exited with {self.proc.returncode}")
            try:
                with self._connect(host=str(self.dir)):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no login after {START_TIMEOUT}s: {exc}") from exc
                time.sleep(0.05)

    def create_database(self, name: str) -> str:
        """A fresh, empty database (dropped first if a test reused the name); returns its URL."""
        with self._connect() as conn:
            ident = sql.Identifier(name)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        return self.url_for(name)

    def stop(self) -> None:
        """pg_ctl fast stop (closes sessions, clean shutdown); else kill our child by PID."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ServerStartError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-t", "10", "-w", "stop")
        stop_process(self.proc)
        self.proc = None


def start_postgres(tmpdir: Path) -> Postgres:
    """A running PostgreSQL in tmpdir; raises ServerUnavailable if it is not installed."""
    server = Postgres(dir=tmpdir, bindir=postgres_bindir())
    server.start()
    return server
