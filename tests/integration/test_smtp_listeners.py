"""`smtp.processes`: more processes accept on the daemon's SMTP socket.

The daemon is frozen with SIGSTOP to make a listener take a connection for sure: only a
process that is running can accept, so the message is in through the listener's door alone.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

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
    config = base_config(port, extra, smtp_processes=2, poll_interval=60)
    gw = Gateway(tmp_path, config, port)
    gw.start()
    try:
        yield gw
    finally:
        if gw.proc is not None and gw.proc.poll() is None:
            os.kill(gw.proc.pid, signal.SIGCONT)
        gw.stop()


def listener_pids(gateway: Gateway) -> list[int]:
    """The listeners' pids, from the daemon's log (each says when it has started)."""
    events = [json.loads(line) for line in gateway.log.read_text().splitlines() if "{" in line]
    started = [e["pid"] for e in events if e.get("event") == "smtp_listener_ready"]
    return [pid for pid in started if Path(f"/proc/{pid}").exists()]


def invoice_mail(number: int) -> object:
    data = INVOICE.replace(b"<cbc:ID>", f"<cbc:ID>L{number}-".encode(), 1)
    return mail("demo@gateway.localhost", (f"invoice-{number}.xml", data, "application/xml"))


def send_while_daemon_frozen(gateway: Gateway, number: int) -> None:
    assert gateway.proc is not None
    os.kill(gateway.proc.pid, signal.SIGSTOP)
    try:
        gateway.send(invoice_mail(number))  # type: ignore[arg-type]
    finally:
        os.kill(gateway.proc.pid, signal.SIGCONT)


def sent(gateway: Gateway) -> int:
    return len([d for d in gateway.docs() if d["status"] == "sent"])


def test_a_listener_accepts_and_wakes_the_rules_stage(gateway: Gateway) -> None:
    (pid,) = gateway.wait_for(lambda: listener_pids(gateway), timeout=20)
    send_while_daemon_frozen(gateway, 1)
    accepted = [
        json.loads(line)
        for line in gateway.log.read_text().splitlines()
        if '"message_accepted"' in line
    ]
    assert [a["listener"] for a in accepted] == [pid]
    gateway.wait_for(lambda: sent(gateway) == 1, timeout=20)
    gateway.send(invoice_mail(2))  # type: ignore[arg-type]
    gateway.wait_for(lambda: sent(gateway) == 2, timeout=20)


def test_a_killed_listener_is_restarted(gateway: Gateway) -> None:
    (first,) = gateway.wait_for(lambda: listener_pids(gateway), timeout=20)
    os.kill(first, signal.SIGKILL)
    (second,) = gateway.wait_for(
        lambda: [p for p in listener_pids(gateway) if p != first], timeout=20
    )
    assert '"smtp_listener_exited"' in gateway.log.read_text()
    send_while_daemon_frozen(gateway, 3)
    assert f'"listener": {second}' in gateway.log.read_text()
    gateway.wait_for(lambda: sent(gateway) == 1, timeout=20)


def test_listeners_stop_with_the_daemon_even_when_it_is_killed(gateway: Gateway) -> None:
    (pid,) = gateway.wait_for(lambda: listener_pids(gateway), timeout=20)
    gateway.kill()
    deadline = time.monotonic() + 15
    while Path(f"/proc/{pid}").exists() and _state(pid) != "Z":
        assert time.monotonic() < deadline, "the listener outlived the daemon"
        time.sleep(0.1)
    gateway.start()
    (again,) = gateway.wait_for(lambda: listener_pids(gateway), timeout=20)
    assert gateway.stop() == 0
    assert not Path(f"/proc/{again}").exists() or _state(again) == "Z"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"
