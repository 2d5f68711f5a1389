"""End to end: a mail in through SMTP, a file out to the accounting drop, with a status."""

from __future__ import annotations

import re
import smtplib
import sqlite3
import time
from pathlib import Path

import pytest
from integration.gateway_proc import DEMO_DROP, Gateway, base_config, mail, start_gateway
from integration.servers import Sshd, free_port

REPO = Path(__file__).resolve().parents[2]
DEMO_INVOICE = REPO / "tests" / "data" / "purchase-invoice-demo.xml"


def test_peppol_invoice_lands_on_real_sftp_byte_for_byte(
    tmp_path: Path, sshd: Sshd, corpus: Path
) -> None:
    invoice = (corpus / "peppol-bis3" / "base-example.xml").read_bytes()
    integration = f"""
[[integrations]]
name = "accounting"
kind = "sftp"
host = "{sshd.host}"
port = {sshd.port}
username = "{sshd.username}"
key_file = "{sshd.client_key}"
host_key = "{sshd.host_key_line}"

[[dossiers]]
slug = "acme"
vat = "SE4598375937"
addresses = ["acme@docs.office.example"]
integration = "accounting"
auto_send = true
"""
    gateway = start_gateway(tmp_path, integration)
    try:
        gateway.send(mail("acme@docs.office.example", ("base-example.xml", invoice, "text/xml")))
        doc = gateway.wait_for(lambda: [d for d in gateway.docs() if d["status"] == "sent"])[0]
        assert doc["type"] == "purchase_invoice"
        assert doc["dossier"] == "acme"
        landed = sshd.root / "Invoice_import" / f"{doc['id']}-base-example.xml"
        assert landed.read_bytes() == invoice
        again = gateway.cli("doc", "send", str(doc["id"]), check=False)
        assert again.returncode == 1
        assert "already sent" in again.stderr
        assert [p.name for p in (sshd.root / "Invoice_import").iterdir()].count(landed.name) == 1
    finally:
        gateway.stop()


def _example_config(port: int) -> str:
    text = (REPO / "config" / "gateway.example.toml").read_text()
    changed, count = re.subn(r"(?m)^port = 2525$", f"port = {port}", text)
    assert count == 1
    changed, count = re.subn(r"(?m)^port = 9125$", f"port = {free_port()}", changed)
    assert count == 1
    return changed


def test_example_config_drops_demo_invoice_into_directory_within_two_seconds(
    tmp_path: Path,
) -> None:
    port = free_port()
    gateway = Gateway(tmp_path, _example_config(port), port)
    gateway.start()
    try:
        invoice = DEMO_INVOICE.read_bytes()
        started = time.monotonic()
        gateway.send(mail("demo@gateway.localhost", ("invoice.xml", invoice, "application/xml")))
        drop = tmp_path / "var" / "outbox" / "Invoice_import"
        landed = gateway.wait_for(lambda: list(drop.glob("*-invoice.xml")), timeout=2.0)
        assert time.monotonic() - started < 2.0
        assert landed[0].read_bytes() == invoice
        docs = gateway.wait_for(lambda: [d for d in gateway.docs() if d["status"] == "sent"])
        assert [(d["dossier"], d["type"], d["filename"]) for d in docs] == [
            ("demo", "purchase_invoice", "invoice.xml")
        ]
        assert not list(drop.glob(".*.part"))
    finally:
        assert gateway.stop() == 0


@pytest.fixture
def demo_gateway(tmp_path: Path) -> Gateway:
    gateway = start_gateway(tmp_path, DEMO_DROP, busy_timeout=0.5)
    yield gateway
    gateway.stop()


def test_unknown_recipient_is_refused_at_rcpt_with_550(demo_gateway: Gateway) -> None:
    message = mail("nobody@gateway.localhost", ("a.xml", b"<a/>", "application/xml"))
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        demo_gateway.send(message)
    code, text = refused.value.recipients["nobody@gateway.localhost"]
    assert code == 550
    assert text.startswith(b"5.1.1")
    assert demo_gateway.docs() == []


def test_broken_attachments_become_unrecognised_and_nothing_crashes(
    demo_gateway: Gateway,
) -> None:
    good = DEMO_INVOICE.read_bytes()
    demo_gateway.send(
        mail(
            "demo@gateway.localhost",
            ("truncated.xml", good[: len(good) // 2], "application/xml"),
            ("photo.pdf", b"\x89PNG\r\n\x1a\n not a pdf at all", "application/pdf"),
            (
                "evil.xml",
                b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
                "application/xml",
            ),
            ("invoice.xml", good, "application/xml"),
        )
    )

    def settled() -> list[dict[str, str]] | None:
        docs = demo_gateway.docs()
        return docs if len(docs) == 4 and any(d["status"] == "sent" for d in docs) else None

    docs = demo_gateway.wait_for(settled)
    by_name = {d["filename"]: d for d in docs}
    for name in ("truncated.xml", "photo.pdf", "evil.xml"):
        assert by_name[name]["type"] == "unrecognised"
        assert by_name[name]["status"] == "inbox"
        assert by_name[name]["reason"]
    assert by_name["invoice.xml"]["status"] == "sent"
    assert demo_gateway.alive()


def test_database_that_cannot_be_written_answers_451_then_accepts_on_retry(
    demo_gateway: Gateway,
) -> None:
    message = mail("demo@gateway.localhost", ("invoice.xml", DEMO_INVOICE.read_bytes(), "text/xml"))
    blocker = sqlite3.connect(demo_gateway.workdir / "var" / "gateway.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(smtplib.SMTPDataError) as tempfail:
            demo_gateway.send(message)
        assert tempfail.value.smtp_code == 451
        assert tempfail.value.smtp_error.startswith(b"4.3.0")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert demo_gateway.alive()
    demo_gateway.send(message)
    docs = demo_gateway.wait_for(lambda: [d for d in demo_gateway.docs() if d["status"] == "sent"])
    assert len(docs) == 1


def test_wrong_config_key_exits_78_naming_the_key(tmp_path: Path) -> None:
    config = base_config(free_port()).replace("[smtp]", "[smtp]\nprot = 25")
    gateway = Gateway(tmp_path, config, 0)
    result = gateway.cli("check-config", str(gateway.config), check=False)
    assert result.returncode == 78
    assert str(gateway.config) in result.stderr
    assert "smtp.prot" in result.stderr
    run = gateway.cli("run", check=False)
    assert run.returncode == 78
    assert "smtp.prot" in run.stderr
