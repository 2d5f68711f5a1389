"""`smtp.processes`: listener processes answer SMTP on the socket the daemon bound."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.gateway_proc import DEMO_DROP, Gateway, base_config, mail
from integration.servers import free_port

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


def events(gateway: Gateway, name: str) -> list[dict[str, Any]]:
    lines = gateway.log.read_text().splitlines()
    return [e for e in (json.loads(x) for x in lines if x.startswith("{")) if e["event"] == name]


def running_listeners(gateway: Gateway) -> list[int]:
    ready = [e["pid"] for e in events(gateway, "smtp_listener_ready")]
    return sorted(pid for pid in ready if _state(pid) not in ("gone", "Z"))


def invoice_mail(number: int) -> Any:
    data = INVOICE.replace(b"<cbc:ID>", f"<cbc:ID>L{number}-".encode(), 1)
    return mail("demo@gateway.localhost", (f"invoice-{number}.xml", data, "application/xml"))


def sent(gateway: Gateway) -> int:
    return len([d for d in gateway.docs() if d["status"] == "sent"])


def test_listeners_accept_and_wake_the_rules_stage(gateway: Gateway) -> None:
    gateway.wait_for(lambda: len(running_listeners(gateway)) == 2, timeout=20)
    for number in range(6):
        gateway.send(invoice_mail(number))
    accepted = events(gateway, "message_accepted")
    assert len(accepted) == 6
    assert {a["listener"] for a in accepted} <= set(running_listeners(gateway))
    gateway.wait_for(lambda: sent(gateway) == 6, timeout=20)


def test_the_daemons_threads_yield_the_cpu_to_the_listeners(gateway: Gateway) -> None:
    gateway.wait_for(lambda: len(running_listeners(gateway)) == 2, timeout=20)
    gateway.send(invoice_mail(1))
    gateway.wait_for(lambda: sent(gateway) == 1, timeout=20)
    assert gateway.proc is not None
    daemon = _nice_values(gateway.proc.pid)
    assert daemon[gateway.proc.pid] == 0  # the loop thread
    assert 10 in daemon.values()  # its workers: recognition, database
    for pid in running_listeners(gateway):
        assert set(_nice_values(pid).values()) == {0}


def test_a_killed_listener_is_restarted(gateway: Gateway) -> None:
    gateway.wait_for(lambda: len(running_listeners(gateway)) == 2, timeout=20)
    first = running_listeners(gateway)
    for pid in first:
        _kill(pid)
    gateway.wait_for(lambda: len(set(running_listeners(gateway)) - set(first)) == 2, timeout=30)
    assert len([e for e in events(gateway, "child_exited") if e["child"] == "smtp-listener"]) == 2
    gateway.send(invoice_mail(7))
    gateway.wait_for(lambda: sent(gateway) == 1, timeout=20)


def test_listeners_stop_with_the_daemon_even_when_it_is_killed(gateway: Gateway) -> None:
    gateway.wait_for(lambda: len(running_listeners(gateway)) == 2, timeout=20)
    orphans = running_listeners(gateway)
    gateway.kill()
    deadline = time.monotonic() + 15
    while any(_state(pid) not in ("gone", "Z") for pid in orphans):
        assert time.monotonic() < deadline, "a listener outlived the daemon"
        time.sleep(0.1)
    gateway.start()
    gateway.wait_for(lambda: len(running_listeners(gateway)) == 2, timeout=20)
    again = running_listeners(gateway)
    assert gateway.stop() == 0
    assert all(_state(pid) in ("gone", "Z") for pid in again)


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def _nice_values(pid: int) -> dict[int, int]:
    """Each thread's nice value (field 19 of its stat line)."""
    values = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        values[int(task.name)] = int(fields[16])
    return values


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"
