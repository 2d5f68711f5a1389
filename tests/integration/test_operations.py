"""Running it like a mail server: systemd notify, signals, metrics and health, queue tools."""

from __future__ import annotations

import itertools
import json
import signal
import smtplib
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from integration.gateway_proc import DEMO_DROP, Gateway, base_config, mail
from integration.servers import free_port

REPO = Path(__file__).resolve().parents[2]
INVOICE = (REPO / "tests" / "data" / "purchase-invoice-demo.xml").read_bytes()


def _receive(sock: socket.socket, wanted: str, timeout: float = 15.0) -> list[str]:
    """Datagrams until one contains `wanted`; all of them, for order checks."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if wanted in seen[-1]:
            return seen
    raise AssertionError(f"no {wanted!r} from the daemon; got {seen}")


def test_notify_protocol_ready_status_watchdog_stopping(tmp_path: Path) -> None:
    port = free_port()
    gateway = Gateway(tmp_path, base_config(port, DEMO_DROP), port)
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        gateway.start(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
        try:
            first = _receive(sock, "READY=1")
            with socket.create_connection(("127.0.0.1", port), timeout=5) as smtp:
                assert smtp.recv(100).startswith(b"220 ")
            assert any("STATUS=" in m and "queue:" in m for m in _receive(sock, "queue:") + first)
            _receive(sock, "WATCHDOG=1")
            _receive(sock, "WATCHDOG=1")
            assert gateway.proc is not None
            gateway.proc.send_signal(signal.SIGTERM)
            _receive(sock, "STOPPING=1")
            assert gateway.proc.wait(timeout=15) == 0
        finally:
            gateway.stop()


def _reload(gateway: Gateway, text: str) -> None:
    gateway.config.write_text(text)
    assert gateway.proc is not None
    gateway.proc.send_signal(signal.SIGHUP)


def test_sighup_refuses_a_bad_config_and_takes_a_good_one(tmp_path: Path) -> None:
    port = free_port()
    good = base_config(port, DEMO_DROP)
    gateway = Gateway(tmp_path, good, port)
    gateway.start()
    try:
        _reload(gateway, good.replace("[smtp]", "[smtp]\nmax_size = 1"))
        gateway.wait_for(lambda: "reload_refused" in gateway.log.read_text())
        assert "smtp.max_size" in gateway.log.read_text()
        assert gateway.alive()
        gateway.send(mail("demo@gateway.localhost", ("i.xml", INVOICE, "text/xml")))
        more = good + '\n[[dossiers]]\nslug = "acme"\naddresses = ["acme@gateway.localhost"]\n'
        _reload(gateway, more + 'integration = "none"\n')
        gateway.wait_for(lambda: '"reloaded"' in gateway.log.read_text())
        gateway.send(mail("acme@gateway.localhost", ("i.xml", INVOICE, "text/xml")))
        docs = gateway.wait_for(lambda: len(d := gateway.docs()) == 2 and d)
        assert {d["dossier"] for d in docs} == {"demo", "acme"}
    finally:
        assert gateway.stop() == 0


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("smtp_processes", [1, 2])
def test_metrics_and_health_endpoints(tmp_path: Path, smtp_processes: int) -> None:
    """With listener processes, their counts reach the daemon's /metrics all the same."""
    port, metrics_port = free_port(), free_port()
    text = base_config(port, DEMO_DROP, smtp_processes=smtp_processes).replace(
        "[metrics]\nenabled = false", f"[metrics]\nenabled = true\nport = {metrics_port}"
    )
    gateway = Gateway(tmp_path, text, port)
    gateway.start()
    base = f"http://127.0.0.1:{metrics_port}"
    try:
        assert _get(f"{base}/livez") == (200, "ok\n")
        assert _get(f"{base}/readyz") == (200, "ok\n")
        assert _get(f"{base}/nope")[0] == 404
        gateway.send(mail("demo@gateway.localhost", ("i.xml", INVOICE, "text/xml")))
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            gateway.send(mail("nobody@gateway.localhost", ("i.xml", INVOICE, "text/xml")))
        gateway.wait_for(lambda: [d for d in gateway.docs() if d["status"] == "sent"])
        status, body = _get(f"{base}/metrics")
        assert status == 200
        assert 'gateway_build_info{version="' in body
        assert 'gateway_documents{status="sent",type="purchase_invoice"} 1.0' in body
        assert 'gateway_queue_deliveries{state="sent"} 1.0' in body
        assert 'gateway_messages_received_total{intake="smtp"} 1.0' in body
        assert 'gateway_messages_refused_total{code="550 5.1.1",intake="smtp"} 1.0' in body
        assert 'gateway_deliveries_total{integration="drop",outcome="sent"} 1.0' in body
        assert 'gateway_delivery_duration_seconds_count{integration="drop"} 1.0' in body
        assert 'gateway_intake_duration_seconds_count{intake="smtp"} 1.0' in body
        assert "demo@gateway.localhost" not in body
    finally:
        gateway.stop()


def test_run_refuses_a_database_behind_the_migrations(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path, base_config(free_port(), DEMO_DROP), 0)
    result = gateway.cli("run", check=False)
    assert result.returncode == 69
    assert "gateway db upgrade" in result.stderr


def _queue(gateway: Gateway) -> list[dict[str, object]]:
    out = gateway.cli("queue", "--json").stdout
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def deferred(tmp_path: Path) -> Gateway:
    """One document deferred because its SFTP server is down; the daemon then stopped."""
    unreachable = f"""
[[integrations]]
name = "down"
kind = "sftp"
host = "127.0.0.1"
port = {free_port()}
username = "nobody"
password_file = "pw"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

[[dossiers]]
slug = "demo"
vat = "BE0123456749"
addresses = ["demo@gateway.localhost"]
integration = "down"
auto_send = true
"""
    (tmp_path / "pw").write_text("secret\n")
    port = free_port()
    gateway = Gateway(tmp_path, base_config(port, unreachable), port)
    gateway.start()
    gateway.send(mail("demo@gateway.localhost", ("i.xml", INVOICE, "text/xml")))
    gateway.wait_for(lambda: [d for d in _queue(gateway) if d["state"] == "deferred"])
    gateway.stop()
    return gateway


def test_queue_lists_and_moves_deliveries_while_the_daemon_is_down(deferred: Gateway) -> None:
    (entry,) = _queue(deferred)
    assert entry["dossier"] == "demo"
    assert entry["integration"] == "down"
    assert str(entry["reason"]).startswith("connect-failed:")
    assert "secret" not in deferred.cli("queue").stdout
    assert deferred.cli("queue", "hold", str(entry["id"])).returncode == 0
    assert "!" in deferred.cli("queue").stdout.splitlines()[0]
    again = deferred.cli("queue", "hold", "ALL")
    assert again.stdout.strip() == "hold: 0 deliveries"
    assert deferred.cli("queue", "flush").stdout.strip() == "flush: 0 deliveries"
    assert deferred.cli("queue", "release", "ALL").stdout.strip() == "release: 1 delivery"
    assert _queue(deferred)[0]["state"] == "queued"
    wrong = deferred.cli("queue", "hold", "all", check=False)
    assert wrong.returncode == 1
    assert "ALL (upper case)" in wrong.stderr
    status = json.loads(deferred.cli("status", "--json").stdout)
    assert status == {"dossier": "demo", "inbox": 0, "sent": 0, "failed": 1, "rejected": 0}


def _numbered(n: int) -> bytes:
    return INVOICE.replace(b"INV-2026-0042", f"INV-DRAIN-{n}".encode())


def _in_flight_session(port: int) -> socket.socket:
    """A client that is half-way through DATA: the shutdown must let it finish."""
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    reader = client.makefile("rb")
    assert reader.readline().startswith(b"220")
    for command in (b"EHLO c", b"MAIL FROM:<s@example.com>", b"RCPT TO:<demo@gateway.localhost>"):
        client.sendall(command + b"\r\n")
        while (line := reader.readline())[3:4] == b"-":
            pass
        assert line[:1] == b"2", line
    client.sendall(b"DATA\r\n")
    assert reader.readline().startswith(b"354")
    client.sendall(b"From: s@example.com\r\nSubject: half\r\n\r\nfirst half\r\n")
    return client


class Senders:
    """Clients mailing numbered invoices in a loop, each on its own session, until stopped;
    they remember which numbers got a 250, as a real client would before deleting its copy."""

    def __init__(self, gateway: Gateway, clients: int) -> None:
        self.gateway = gateway
        self.accepted: list[int] = []
        self.stop = threading.Event()
        self.numbers = itertools.count()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def __enter__(self) -> Senders:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                n = next(self.numbers)
            message = mail("demo@gateway.localhost", (f"i{n}.xml", _numbered(n), "text/xml"))
            try:
                self.gateway.send(message)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)
                continue
            with self.lock:
                self.accepted.append(n)


def test_sigterm_under_load_finishes_sessions_refuses_new_ones_and_loses_nothing(
    tmp_path: Path,
) -> None:
    port = free_port()
    gateway = Gateway(
        tmp_path, base_config(port, "[daemon]\ndrain_timeout = 20\n" + DEMO_DROP), port
    )
    gateway.start()
    assert gateway.proc is not None
    with Senders(gateway, clients=6) as senders:
        gateway.wait_for(lambda: len(senders.accepted) >= 20, timeout=60)
        client = _in_flight_session(port)
        gateway.proc.send_signal(signal.SIGTERM)
        gateway.wait_for(lambda: "gateway_stopping" in gateway.log.read_text())
        with socket.create_connection(("127.0.0.1", port), timeout=5) as late:
            assert late.recv(200).startswith(b"421 4.3.2")
        client.sendall(b"second half\r\n.\r\n")
        assert client.makefile("rb").readline().startswith(b"250 ")
        client.close()
        assert gateway.proc.wait(timeout=30) == 0
    accepted = sorted(senders.accepted)
    assert gateway.log.read_text().count('"event": "message_accepted"') == len(accepted) + 1
    gateway.start()
    try:
        gateway.wait_for(
            lambda: len([d for d in gateway.docs() if d["status"] == "sent"]) == len(accepted),
            timeout=60,
        )
    finally:
        gateway.stop()
    drop = tmp_path / "var" / "outbox" / "Invoice_import"
    landed = sorted(int(p.name.split("-i", 1)[1].removesuffix(".xml")) for p in drop.iterdir())
    assert landed == accepted
