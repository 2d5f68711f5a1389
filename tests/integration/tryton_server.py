"""A real trytond (Tryton 8.2) on a loopback port, started from a template database.

Building the template (schema, Belgian chart, company, users) takes about half a minute, so it
is done once per test run; every server then starts on its own copy in about a second and is
stopped by its PID. trytond comes from the `test` extra (pip), so it runs with our interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from integration.servers import (
    ServerStartError,
    ServerUnavailable,
    free_port,
    log_tail,
    stop_process,
)

DBNAME = "gw"
PASSWORD = "Gw-test-Pass-2026"  # passes Tryton's password policy; loopback test server only
BUILD_TIMEOUT = 180.0
START_TIMEOUT = 30.0
SETUP_SCRIPT = Path(__file__).with_name("tryton_setup.py")


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _write_conf(path: Path, db_dir: Path, port: int) -> None:
    path.write_text(
        f"[database]\nuri = sqlite://\npath = {db_dir}\n"
        f"[web]\nlisten = 127.0.0.1:{port}\n"
        "[session]\nmax_attempt = 5\n"
    )


@dataclass(frozen=True)
class TrytonTemplate:
    """A ready database file that servers copy; `sqlite` is never opened by a server."""

    dir: Path

    @property
    def sqlite(self) -> Path:
        return self.dir / "db" / f"{DBNAME}.sqlite"


def build_template(workdir: Path) -> TrytonTemplate:
    """Initialise the schema and run the company setup; raises if trytond is not installed."""
    if importlib.util.find_spec("trytond") is None or not Path(_bin("trytond-admin")).exists():
        raise ServerUnavailable("trytond", "pip: trytond (the gateway's test extra)")
    template = TrytonTemplate(workdir)
    template.sqlite.parent.mkdir(parents=True, exist_ok=True)
    template.sqlite.touch()
    conf = workdir / "trytond.conf"
    _write_conf(conf, template.sqlite.parent, free_port())
    passfile = workdir / "adminpass"
    passfile.write_text(PASSWORD + "\n")
    env = {**os.environ, "TRYTONPASSFILE": str(passfile)}
    steps = [
        [_bin("trytond-admin"), "-c", str(conf), "-d", DBNAME, "-u", "account_be",
         "account_invoice", "edocument_ubl", "--activate-dependencies", "-l", "nl"],
        [sys.executable, str(SETUP_SCRIPT), str(conf), DBNAME, PASSWORD],
    ]  # fmt: skip
    log = workdir / "build.log"
    # No --email: trytond checks its deliverability over DNS; the empty answer means none.
    for cmd in steps:
        with log.open("ab") as out:
            done = subprocess.run(
                cmd, input=b"\n", stdout=out, stderr=out, env=env,
                cwd=workdir, timeout=BUILD_TIMEOUT, check=False,
            )  # fmt: skip
        if done.returncode != 0:
            step = " ".join(Path(c).name for c in cmd[:2])
            raise ServerStartError(f"{step} failed:\n{log_tail(log, 40)}")
    return template


@dataclass
class TrytonServer:
    """One trytond on its own copy of the template; `url` is what an integration points at."""

    dir: Path
    template: TrytonTemplate
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def sqlite(self) -> Path:
        return self.dir / "db" / f"{DBNAME}.sqlite"

    @property
    def log(self) -> Path:
        return self.dir / "trytond.log"

    def prepare(self) -> None:
        self.sqlite.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.template.sqlite, self.sqlite)
        _write_conf(self.dir / "trytond.conf", self.sqlite.parent, self.port)

    def start(self) -> None:
        """Start on the prepared copy and wait until the RPC answers the server version."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [_bin("trytond"), "-c", str(self.dir / "trytond.conf"), "-d", DBNAME],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.dir,
            )  # fmt: skip
        try:
            self._wait_ready()
        except (TimeoutError, ServerStartError) as exc:
            self.stop()
            raise ServerStartError(f"trytond did not start: {exc}\n{log_tail(self.log)}") from exc

    def _wait_ready(self) -> None:
        body = json.dumps({"id": 0, "method": "common.server.version", "params": []}).encode()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerStartError(f"trytond exited with {self.proc.returncode}")
            request = urllib.request.Request(
                f"{self.url}/rpc/", body, {"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=2) as answer:
                    if "result" in json.loads(answer.read()):
                        return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no answer on {self.url}/rpc/ after {START_TIMEOUT}s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def restart(self) -> None:
        """Same port, same data: what a package's restart looks like to the gateway."""
        self.stop()
        self.start()


def start_tryton(template: TrytonTemplate, workdir: Path) -> TrytonServer:
    server = TrytonServer(dir=workdir, template=template)
    server.prepare()
    server.start()
    return server
