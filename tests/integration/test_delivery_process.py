"""The daemon's delivery as an operator drives it: CLI sending, and kill -9 in mid-delivery."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from integration.delivery_harness import invoice
from integration.gateway_proc import mail, start_gateway
from integration.servers import Sshd


def _dossier(integration: str) -> str:
    return f"""
[[dossiers]]
slug = "demo"
vat = "BE0123456749"
addresses = ["demo@gateway.localhost"]
integration = "{integration}"
"""


def test_send_all_queues_recognised_inbox_documents_and_refuses_the_rest(tmp_path: Path) -> None:
    extra = '[[integrations]]\nname = "drop"\nkind = "directory"\npath = "var/outbox"\n'
    gateway = start_gateway(tmp_path, extra + _dossier("drop"))
    try:
        gateway.send(
            mail(
                "demo@gateway.localhost",
                ("a.xml", invoice("SEND-A"), "application/xml"),
                ("b.xml", invoice("SEND-B"), "application/xml"),
                ("scan.pdf", b"%PDF-1.4 not really", "application/pdf"),
            )
        )
        docs = gateway.wait_for(lambda: (d := gateway.docs()) and len(d) == 3 and d)
        assert {d["status"] for d in docs} == {"inbox"}
        ids = {d["filename"]: d["id"] for d in docs}

        sent = gateway.cli("doc", "send", "--all", "--dossier", "demo", check=False)
        assert sent.returncode == 1
        assert f"document {ids['scan.pdf']} has no type" in sent.stderr
        assert f"document {ids['a.xml']}: queued" in sent.stdout
        assert f"document {ids['b.xml']}: queued" in sent.stdout

        def both_sent() -> bool:
            return sum(d["status"] == "sent" for d in gateway.docs()) == 2

        gateway.wait_for(both_sent)
        outbox = tmp_path / "var" / "outbox" / "Invoice_import"
        assert sorted(p.name for p in outbox.iterdir()) == [
            f"{ids['a.xml']}-a.xml",
            f"{ids['b.xml']}-b.xml",
        ]
        again = gateway.cli("doc", "send", "--all", "--dossier", "demo", check=False)
        assert again.returncode == 1
        assert "queued" not in again.stdout

        retry = gateway.cli("doc", "retry", str(ids["a.xml"]), check=False)
        assert retry.returncode == 1
        assert "only failed documents are retried" in retry.stderr
        refused = gateway.cli("doc", "archive", str(ids["scan.pdf"]), check=False)
        assert refused.returncode == 1
        assert "only sent documents can be archived" in refused.stderr
        archived = gateway.cli("doc", "archive", str(ids["a.xml"]))
        assert "archived" in archived.stdout
        shown = json.loads(gateway.cli("doc", "show", str(ids["a.xml"]), "--json").stdout)
        assert shown["archived"] is True
        assert [e["kind"] for e in shown["events"]][-1] == "document_archived"
        attempts = [e for e in shown["events"] if e["kind"] == "delivery_attempt"]
        assert [(a["integration"], a["outcome"]) for a in attempts] == [("drop", "sent")]
    finally:
        gateway.stop()


def _sending(db: Path) -> set[int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT document_id FROM deliveries WHERE state = 'sending'")
        return {r[0] for r in rows}


def _uncertain(db: Path) -> set[int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT document_id FROM events WHERE kind = 'delivery_uncertain'")
        return {r[0] for r in rows}


def test_kill_9_during_sftp_deliveries_then_restart_sends_each_document_once(
    tmp_path: Path, sshd: Sshd
) -> None:
    count = 120
    extra = f"""
[[integrations]]
name = "sftp"
kind = "sftp"
host = "{sshd.host}"
port = {sshd.port}
username = "{sshd.username}"
key_file = "{sshd.client_key}"
host_key = "{sshd.host_key_line}"
upload_path = "Kill_import/"
""" + _dossier("sftp")
    drop = sshd.root / "Kill_import"
    gateway = start_gateway(tmp_path, extra, lease=2.0)
    files = [(f"k{i}.xml", invoice(f"KILL-{i}"), "application/xml") for i in range(count)]
    gateway.send(mail("demo@gateway.localhost", *files))
    gateway.wait_for(lambda: len(gateway.docs()) == count, timeout=30)
    gateway.cli("doc", "send", "--all", "--dossier", "demo")
    db = tmp_path / "var" / "gateway.db"

    def in_flight() -> bool:
        return drop.is_dir() and len(list(drop.glob("*.xml"))) >= 5 and bool(_sending(db))

    gateway.wait_for(in_flight, timeout=30)
    gateway.kill()

    landed_before = len(list(drop.glob("*.xml")))
    cut_off = _sending(db)
    assert landed_before < count, "everything was delivered before the kill: nothing was tested"
    assert cut_off, "no delivery was in flight at the kill"

    gateway.start()
    try:
        docs = gateway.wait_for(
            lambda: (d := gateway.docs()) and all(x["status"] == "sent" for x in d) and d,
            timeout=90,
        )
    finally:
        gateway.stop()
    by_name = {f"{d['id']}-{d['filename']}": d for d in docs}
    landed = sorted(p.name for p in drop.iterdir())
    assert landed == sorted(by_name)
    for name, data, _ in files:
        (doc,) = [d for d in docs if d["filename"] == name]
        assert (drop / f"{doc['id']}-{name}").read_bytes() == data
    assert cut_off <= _uncertain(db)
