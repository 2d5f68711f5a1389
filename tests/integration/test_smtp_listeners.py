"""`smtp.processes`: listener processes answer SMTP on the socket the daemon bound."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

LISTENER_READY = "smtp_listener_ready"
REPO = Path(__file__).resolve().parents[2]
INVOICE = (REPO / "tests" / "data" / "purchase-invoice-demo.xml").read_bytes()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    port = free_port()
    # Polling so slow that only a listener's poke can wake the rules stage in time.
    extra = "[daemon]\ndrain_timeout = 5\n" + DEMO_DROP
    gw = Gateway(tmp_path, base_config(port, extra, smtp_processes=2, poll_interval=60), port)
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


def invoice_mail(number: int) -> Any:
    data = INVOICE.replace(b"<cbc:ID>", f"<cbc:ID>L{number}-".encode(), 1)
    return mail("demo@gateway.localhost", (f"invoice-{number}.xml", data, "application/xml"))


def sent(gateway: Gateway) -> int:
    return len([d for d in gateway.docs() if d["status"] == "sent"])


def test_listeners_accept_and_wake_the_rules_stage(gateway: Gateway) -> None:
    gateway.wait_for(lambda: len(gateway.live_pids(LISTENER_READY)) == 2, timeout=20)
    for number in range(6):
        gateway.send(invoice_mail(number))
    accepted = gateway.events("message_accepted")
    assert len(accepted) == 6
    assert {a["listener"] for a in accepted} <= set(gateway.live_pids(LISTENER_READY))
    gateway.wait_for(lambda: sent(gateway) == 6, timeout=20)


def test_the_daemons_threads_yield_the_cpu_to_the_listeners(gateway: Gateway) -> None:
    gateway.wait_for(lambda: len(gateway.live_pids(LISTENER_READY)) == 2, timeout=20)
    gateway.send(invoice_mail(1))
    gateway.wait_for(lambda: sent(gateway) == 1, timeout=20)
    assert gateway.proc is not None
    daemon = nice_values(gateway.proc.pid)
    assert daemon[gateway.proc.pid] == 0  # the loop thread
    assert 10 in daemon.values()  # its workers: recognition, database
    for pid in gateway.live_pids(LISTENER_READY):
        assert set(nice_values(pid).values()) == {0}


def test_a_killed_listener_is_restarted(gateway: Gateway) -> None:
    gateway.wait_for(lambda: len(gateway.live_pids(LISTENER_READY)) == 2, timeout=20)
    first = gateway.live_pids(LISTENER_READY)
    for pid in first:
        _kill(pid)
    gateway.wait_for(
        lambda: len(set(gateway.live_pids(LISTENER_READY)) - set(first)) == 2, timeout=30
    )
    assert len([e for e in gateway.events("child_exited") if e["child"] == "smtp-listener"]) == 2
    gateway.send(invoice_mail(7))
    gateway.wait_for(lambda: sent(gateway) == 1, timeout=20)


def test_listeners_stop_with_the_daemon_even_when_it_is_killed(gateway: Gateway) -> None:
    gateway.wait_for(lambda: len(gateway.live_pids(LISTENER_READY)) == 2, timeout=20)
    orphans = gateway.live_pids(LISTENER_READY)
    gateway.kill()
    deadline = time.monotonic() + 15
    while any(process_state(pid) not in ("gone", "Z") for pid in orphans):
        assert time.monotonic() < deadline, "a listener outlived the daemon"
        time.sleep(0.1)
    gateway.start()
    gateway.wait_for(lambda: len(gateway.live_pids(LISTENER_READY)) == 2, timeout=20)
    again = gateway.live_pids(LISTENER_READY)
    assert gateway.stop() == 0
    assert all(process_state(pid) in ("gone", "Z") for pid in again)


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def test_one_listener_process_when_the_door_is_asked_out_of_the_daemon(tmp_path: Path) -> None:
    port = free_port()
    extra = "[daemon]\ndrain_timeout = 5\nsmtp_process = true\nrules_process = true\n" + DEMO_DROP
    gw = Gateway(tmp_path, base_config(port, extra, smtp_processes=1, poll_interval=60), port)
    gw.start()
    try:
        gw.wait_for(lambda: len(gw.live_pids(LISTENER_READY)) == 1, timeout=20)
        listener = gw.live_pids(LISTENER_READY)[0]
        assert gw.proc is not None and listener != gw.proc.pid
        gw.send(invoice_mail(1))
        assert [a["listener"] for a in gw.events("message_accepted")] == [listener]
        gw.wait_for(lambda: sent(gw) == 1, timeout=20)
    finally:
        assert gw.stop() == 0
    assert process_state(listener) in ("gone", "Z")
