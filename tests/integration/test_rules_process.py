"""`daemon.rules_process`: the rules stage in a child process the daemon keeps.

The delivery poll is set so slow that only the wake-ups passed between the processes (a door
accepted a message → the child; the child queued documents → the daemon's workers) can make
the documents arrive within the waits.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from integration.gateway_proc import (
    DEMO_DROP,
    Gateway,
    base_config,
    mail,
    nice_values,
    process_state,
)
from integration.servers import free_port
from sqlalchemy import func, select

from gateway.intake.accept import Envelope, accept_message
from gateway.store.db import Store, open_store
from gateway.store.models import Document, Message

CHILD_READY = "rules_stage_ready"
REPO = Path(__file__).resolve().parents[2]
INVOICE = (REPO / "tests" / "data" / "purchase-invoice-demo.xml").read_bytes()
ADDRESS = "demo@gateway.localhost"
CHILD = "[daemon]\nrules_process = true\ndrain_timeout = 5\n"
HOLD_PURCHASES = """
[[rules]]
name = "purchases-by-hand"
dossier = "demo"
[rules.match]
type = "purchase_invoice"
[rules.actions]
auto_send = false
"""


def _gateway(tmp_path: Path, extra: str = "", smtp_processes: int = 1) -> Gateway:
    port = free_port()
    text = base_config(
        port, CHILD + DEMO_DROP + extra, smtp_processes=smtp_processes, poll_interval=60
    )
    return Gateway(tmp_path, text, port)


@pytest.fixture(autouse=True)
def this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The processes run from scratch directories: make them import this checkout's code."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = _gateway(tmp_path)
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


def invoice(number: int) -> EmailMessage:
    data = INVOICE.replace(b"INV-2026-0042", f"INV-CHILD-{number:03d}".encode())
    return mail(ADDRESS, (f"invoice-{number}.xml", data, "application/xml"))


def sent(gateway: Gateway) -> int:
    return len([d for d in gateway.docs() if d["status"] == "sent"])


@pytest.mark.parametrize("smtp_processes", [1, 2])
def test_the_child_recognises_and_wakes_the_workers(tmp_path: Path, smtp_processes: int) -> None:
    drop = tmp_path / "var" / "drop"
    (drop / "demo").mkdir(parents=True)
    folder = f'\n[folder]\nroot = "{drop}"\nstable_seconds = 0\n'
    gateway = _gateway(tmp_path, folder, smtp_processes)
    gateway.start()
    try:
        (child,) = gateway.wait_for(lambda: gateway.live_pids(CHILD_READY), timeout=20)
        for number in range(4):
            gateway.send(invoice(number))
        gateway.wait_for(lambda: sent(gateway) == 4, timeout=20)
        data = INVOICE.replace(b"INV-2026-0042", b"INV-FOLDER-1")
        (drop / "demo" / "dropped.xml").write_bytes(data)
        gateway.wait_for(lambda: sent(gateway) == 5, timeout=20)
        created = gateway.events("document_created")
        assert len(created) == 5
        assert {e.get("rules_stage") for e in created} == {child}
        assert gateway.proc is not None and child != gateway.proc.pid
        threads = nice_values(child)
        assert threads[child] == 0  # the loop thread
        assert 10 in threads.values()  # the threads that recognise and write
    finally:
        assert gateway.stop() == 0
    assert process_state(child) in ("gone", "Z")


def test_sighup_reaches_the_child(gateway: Gateway) -> None:
    (child,) = gateway.wait_for(lambda: gateway.live_pids(CHILD_READY), timeout=20)
    gateway.send(invoice(1))
    gateway.wait_for(lambda: sent(gateway) == 1, timeout=20)
    gateway.config.write_text(gateway.config.read_text() + HOLD_PURCHASES)
    assert gateway.proc is not None
    gateway.proc.send_signal(signal.SIGHUP)
    gateway.wait_for(
        lambda: [e for e in gateway.events("reloaded") if e.get("rules_stage") == child]
    )
    gateway.send(invoice(2))
    docs = gateway.wait_for(lambda: len(d := gateway.docs()) == 2 and d, timeout=20)
    held = next(d for d in docs if d["filename"] == "invoice-2.xml")
    assert held["status"] == "inbox"
    assert gateway.live_pids(CHILD_READY) == [child]  # reloaded in place, not replaced


def test_a_failing_child_is_restarted_and_reported_not_ready(tmp_path: Path) -> None:
    metrics_port = free_port()
    metrics = f"[metrics]\nenabled = true\nport = {metrics_port}\n"
    gateway = _gateway(tmp_path)
    good = gateway.config.read_text().replace("[metrics]\nenabled = false\n", metrics)
    gateway.config.write_text(good)
    gateway.start()
    readyz = f"http://127.0.0.1:{metrics_port}/readyz"
    try:
        (child,) = gateway.wait_for(lambda: gateway.live_pids(CHILD_READY), timeout=20)
        gateway.wait_for(lambda: _get(readyz)[0] == 200)
        # The next child finds a broken config and exits at once, again and again.
        gateway.config.write_text(good.replace("[smtp]", "[smtp]\nmax_size = 1"))
        os.kill(child, signal.SIGKILL)
        refused = gateway.wait_for(lambda: (r := _get(readyz))[0] == 503 and r, timeout=20)
        assert refused[1] == "rules stage: restarting\n"
        gateway.wait_for(lambda: len(gateway.events("child_exited")) >= 2, timeout=20)
        gateway.config.write_text(good)
        gateway.wait_for(lambda: gateway.live_pids(CHILD_READY), timeout=60)
        gateway.wait_for(lambda: _get(readyz)[0] == 200, timeout=20)
        gateway.send(invoice(3))
        gateway.wait_for(lambda: sent(gateway) == 1, timeout=20)
        assert {e["child"] for e in gateway.events("child_exited")} == {"rules-stage"}
    finally:
        assert gateway.stop() == 0


def test_the_child_stops_with_the_daemon_even_when_it_is_killed(gateway: Gateway) -> None:
    (child,) = gateway.wait_for(lambda: gateway.live_pids(CHILD_READY), timeout=20)
    gateway.kill()
    deadline = time.monotonic() + 15
    while process_state(child) not in ("gone", "Z"):
        assert time.monotonic() < deadline, "the rules stage outlived the daemon"
        time.sleep(0.1)


MESSAGES = 24


def _preload(gateway: Gateway, count: int) -> Store:
    """`count` messages accepted into the store before the daemon starts: a full batch."""
    gateway.cli("db", "upgrade")
    var = gateway.workdir / "var"
    store = open_store(f"sqlite:///{var}/gateway.db", var / "blobs")
    for n in range(count):
        msg = invoice(n)
        msg["Message-ID"] = f"<child-{n}@example.com>"
        accept_message(store, msg.as_bytes(), Envelope("smtp", "s@example.com", [ADDRESS]))
    return store


@pytest.mark.parametrize("point", ["pipeline_blobs_published", "pipeline_before_commit"])
def test_a_child_killed_in_a_batch_leaves_it_whole_to_the_next(tmp_path: Path, point: str) -> None:
    """The child alone, on a link held here, SIGKILLed at a named point of its first batch;
    then the gateway with its own child does every message once."""
    gateway = _gateway(tmp_path)
    store = _preload(gateway, MESSAGES)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs, open(gateway.log, "ab") as log:
        module = "gateway.pipeline.process"
        command = [sys.executable, "-m", module, "--config", str(gateway.config)]
        killed = subprocess.run(
            [*command, "--link-fd", str(theirs.fileno())],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GW_CRASH_AT": point},
            pass_fds=(theirs.fileno(),),
            timeout=60,
            check=False,
        )
    assert killed.returncode == -signal.SIGKILL, gateway.log_tail()
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Document)) == 0
        assert session.scalars(select(Message).where(Message.processed_at.is_not(None))).all() == []
    _deliver_each_once(gateway, store, MESSAGES)
    assert list((tmp_path / "var" / "blobs" / ".staging").iterdir()) == []


def test_a_child_killed_while_working_is_replaced_and_nothing_is_lost(tmp_path: Path) -> None:
    """SIGKILL from outside while the child works through a backlog of many batches. Files it
    was staging may stay behind: the sweep at start takes them once they are an hour old."""
    count = 200
    gateway = _gateway(tmp_path)
    store = _preload(gateway, count)
    gateway.start()
    try:
        (child,) = gateway.wait_for(lambda: gateway.live_pids(CHILD_READY), timeout=20)
        gateway.wait_for(lambda: _documents(store) > 0, timeout=30)
        os.kill(child, signal.SIGKILL)
        assert _documents(store) < count, "the backlog was done before the kill"
        gateway.wait_for(lambda: set(gateway.live_pids(CHILD_READY)) - {child}, timeout=30)
    finally:
        gateway.stop()
    _deliver_each_once(gateway, store, count)


def _deliver_each_once(gateway: Gateway, store: Store, count: int) -> None:
    gateway.start()
    try:
        gateway.wait_for(lambda: sent(gateway) == count, timeout=120)
    finally:
        gateway.stop()
    with store.session() as session:
        per_message = Counter(session.scalars(select(Document.message_id)))
    assert sorted(per_message.values()) == [1] * count
    drop = gateway.workdir / "var" / "outbox" / "Invoice_import"
    assert len(list(drop.iterdir())) == count


def _documents(store: Store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(Document)) or 0


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""
