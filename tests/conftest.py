"""Session-wide fixtures: one real sshd and one real PostgreSQL per pytest run.

They live here, at the top of tests/, so unit, integration and corpus tests can all ask for them.
Starting a server costs a second or two; sharing one per session keeps the suite fast, and each
test isolates itself (its own database via `postgres.create_database`, its own file names).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from corpus_dir import CORPUS
from integration.dovecot import Dovecot, start_dovecot
from integration.mailservers import Postfix, start_postfix
from integration.servers import Postgres, ServerUnavailable, Sshd, start_postgres, start_sshd
from integration.tryton_server import TrytonServer, TrytonTemplate, build_template, start_tryton

T = TypeVar("T")


def _start_or_skip(start: Callable[[Path], T], tmpdir: Path) -> T:
    """In CI a missing server is a broken machine, so fail; on a laptop, skip and say why."""
    try:
        return start(tmpdir)
    except ServerUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {exc}", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A real OpenSSH SFTP drop server; read `host_key_line` at use, a test may rotate it."""
    server = _start_or_skip(start_sshd, tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """A real PostgreSQL cluster; tests take a fresh database each with `create_database`."""
    server = _start_or_skip(start_postgres, tmp_path_factory.mktemp("postgres"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    """A real Dovecot IMAP server; each test empties the account with `reset_mailbox`."""
    server = _start_or_skip(start_dovecot, tmp_path_factory.mktemp("dovecot"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postfix]:
    """The machine's one Postfix, on a loopback port, delivering books.test to Maildirs."""
    server = _start_or_skip(lambda _: start_postfix(), tmp_path_factory.mktemp("postfix"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tryton_template(tmp_path_factory: pytest.TempPathFactory) -> TrytonTemplate:
    """Tryton's schema, Belgian chart, company and users: built once per run (30-100 s).

    A developer iterating may point GATEWAY_TRYTON_TEMPLATE at a directory: it is built there
    once and reused by later runs (delete it after changing tryton_setup.py).
    """
    keep = os.environ.get("GATEWAY_TRYTON_TEMPLATE")
    if keep and TrytonTemplate(Path(keep)).sqlite.is_file():
        return TrytonTemplate(Path(keep))
    workdir = Path(keep) if keep else tmp_path_factory.mktemp("tryton-template")
    return _start_or_skip(build_template, workdir)


@pytest.fixture
def tryton_factory(
    tryton_template: TrytonTemplate, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], TrytonServer]]:
    """Start fresh trytond servers on copies of the template (~1 s each); all stopped after."""
    started: list[TrytonServer] = []

    def start() -> TrytonServer:
        started.append(start_tryton(tryton_template, tmp_path_factory.mktemp("trytond")))
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The shared corpus of real e-invoices and mails; missing it under CI=true is a failure."""
    if not (CORPUS / "expected.csv").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the corpus is missing at {CORPUS}", pytrace=False)
        pytest.skip(f"corpus not found at {CORPUS} (set GATEWAY_CORPUS)")
    return CORPUS
