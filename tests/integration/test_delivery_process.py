"""The daemon's delivery as an operator drives it: CLI sending, and kill -9 in mid-delivery."""

from __future__ import annotations

import email
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from email.policy import default
from pathlib import Path

from integration.delivery_harness import invoice
from integration.gateway_proc import Gateway, base_config, mail, start_gateway
from integration.mailservers import Postfix
from integration.package_api import SECRET, PackageApi
from integration.servers import Sshd, free_port


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


# The daemon kills itself right after the tenth file is handed over, before its outcome is
# recorded: deliveries are in flight then however fast the machine is.
CRASH_AFTER_TEN = {"GW_CRASH_AT": "delivery_handed_over:10"}


def _crashing_gateway(tmp_path: Path, extra: str) -> Gateway:
    port = free_port()
    gateway = Gateway(tmp_path, base_config(port, extra, lease=2.0), port)
    gateway.start(env=CRASH_AFTER_TEN)
    return gateway


def _send_until_the_crash(gateway: Gateway, files: list[tuple[str, bytes, str]]) -> None:
    try:
        gateway.send(mail("demo@gateway.localhost", *files))
        gateway.wait_for(lambda: len(gateway.docs()) == len(files), timeout=30)
        gateway.cli("doc", "send", "--all", "--dossier", "demo")
        gateway.wait_for(lambda: not gateway.alive(), timeout=60)
    finally:
        gateway.kill()


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
    gateway = _crashing_gateway(tmp_path, extra)
    files = [(f"k{i}.xml", invoice(f"KILL-{i}"), "application/xml") for i in range(count)]
    db = tmp_path / "var" / "gateway.db"
    _send_until_the_crash(gateway, files)

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


def test_repeated_kill_9_while_outcomes_share_commits_loses_and_doubles_nothing(
    tmp_path: Path, sshd: Sshd
) -> None:
    """Eight deliveries at once record their outcomes in shared commits, so a kill lands
    between renames on the server and the commit that records them. After three kills every
    document is sent, lies once under its own name and has exactly one recorded sent attempt."""
    count = 150
    drop = sshd.root / "Batch_import"
    integration = f"""
[[integrations]]
name = "sftp"
kind = "sftp"
host = "{sshd.host}"
port = {sshd.port}
username = "{sshd.username}"
key_file = "{sshd.client_key}"
host_key = "{sshd.host_key_line}"
upload_path = "Batch_import/"
concurrency = 8
"""
    port = free_port()
    config = base_config(port, integration + _dossier("sftp"), lease=2.0)
    gateway = Gateway(tmp_path, config.replace("[delivery]\n", "[delivery]\nworkers = 8\n"), port)
    gateway.start(env=CRASH_AFTER_TEN)
    files = [(f"b{i}.xml", invoice(f"BATCH-{i}"), "application/xml") for i in range(count)]
    db = tmp_path / "var" / "gateway.db"

    def landed() -> int:
        return len(list(drop.glob("*.xml"))) if drop.is_dir() else 0

    cut_off: set[int] = set()
    _send_until_the_crash(gateway, files)
    try:
        for _ in range(3):
            cut_off |= _sending(db)
            assert landed() < count, "everything was delivered before a kill: nothing was tested"
            assert _sending(db), "no delivery was in flight at the kill"
            gateway.start(env=CRASH_AFTER_TEN)
            gateway.wait_for(lambda: not gateway.alive(), timeout=60)
        gateway.start()
        docs = gateway.wait_for(
            lambda: (d := gateway.docs()) and all(x["status"] == "sent" for x in d) and d,
            timeout=120,
        )
    finally:
        gateway.stop()
    assert sorted(p.name for p in drop.iterdir()) == sorted(
        f"{d['id']}-{d['filename']}" for d in docs
    )
    for name, data, _ in files:
        (doc,) = [d for d in docs if d["filename"] == name]
        assert (drop / f"{doc['id']}-{name}").read_bytes() == data
    with sqlite3.connect(db) as conn:
        sent = Counter(
            document_id
            for document_id, detail in conn.execute(
                "SELECT document_id, detail FROM events WHERE kind = 'delivery_attempt'"
            )
            if json.loads(detail)["outcome"] == "sent"
        )
    assert sent == Counter({d["id"]: 1 for d in docs})
    assert cut_off <= _uncertain(db)


def _kill_mid_delivery(tmp_path: Path, integration: str, landed: Callable[[], int]) -> Gateway:
    """Queue COUNT documents, kill -9 the gateway with deliveries in flight, restart it and
    wait until every document is sent. Returns the (stopped) gateway."""
    gateway = _crashing_gateway(tmp_path, integration + _dossier("package"))
    files = [(f"k{i}.xml", invoice(f"KILL-{i}"), "application/xml") for i in range(KILL_COUNT)]
    db = tmp_path / "var" / "gateway.db"
    _send_until_the_crash(gateway, files)
    assert landed() < KILL_COUNT, "everything was delivered before the kill: nothing was tested"
    assert _sending(db), "no delivery was in flight at the kill"
    gateway.start()
    try:
        gateway.wait_for(lambda: all(d["status"] == "sent" for d in gateway.docs()), timeout=90)
    finally:
        gateway.stop()
    return gateway


KILL_COUNT = 80


def test_kill_9_during_http_deliveries_makes_one_resource_per_document(tmp_path: Path) -> None:
    api = PackageApi()
    api.start()
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    integration = f"""
[[integrations]]
name = "package"
kind = "http"
url = "{api.url}"
secret_file = "{secret}"
"""
    try:
        _kill_mid_delivery(tmp_path, integration, lambda: len(api.resources))
    finally:
        api.stop()
    assert len(api.resources) == KILL_COUNT
    numbers = sorted(r.metadata["filename"] for r in api.resources.values())
    assert numbers == sorted(f"k{i}.xml" for i in range(KILL_COUNT))
    repeated = {k for k, n in Counter(api.attempts).items() if n > 1}
    db = tmp_path / "var" / "gateway.db"
    with sqlite3.connect(db) as conn:
        keys_of_uncertain = {
            f"delivery-{d}-"
            for (d,) in conn.execute(
                "SELECT delivery_id FROM events WHERE kind = 'delivery_uncertain'"
            )
        }
    assert all(any(k.startswith(p) for p in keys_of_uncertain) for k in repeated)


def test_kill_9_during_mail_deliveries_resends_only_uncertain_ones_with_their_message_id(
    tmp_path: Path, postfix: Postfix
) -> None:
    before = len(postfix.messages("sales"))
    integration = f"""
[[integrations]]
name = "package"
kind = "mailbox"
host = "{postfix.host}"
port = {postfix.port}
tls = "none"
from_address = "gateway@office.test"
to = "sales@books.test"
"""

    def landed() -> int:
        return len(postfix.messages("sales")) - before

    gateway = _kill_mid_delivery(tmp_path, integration, landed)
    docs = gateway.docs()
    db = tmp_path / "var" / "gateway.db"
    uncertain_docs = _uncertain(db)

    def copies() -> Counter[str]:
        found = Counter()
        for raw in postfix.messages("sales")[before:]:
            msg = email.message_from_bytes(raw, policy=default)
            found[str(msg["X-Gateway-Document"])] += 1
        return found

    deadline = time.monotonic() + 30
    while set(copies()) != {str(d["id"]) for d in docs}:
        assert time.monotonic() < deadline, "a sent document never reached the mailbox"
        time.sleep(0.1)
    twice = {int(doc) for doc, n in copies().items() if n > 1}
    assert twice <= uncertain_docs, "a document was mailed twice without being uncertain"
    assert max(copies().values()) <= 2
    ids: dict[str, set[str]] = {}
    for raw in postfix.messages("sales")[before:]:
        msg = email.message_from_bytes(raw, policy=default)
        ids.setdefault(str(msg["X-Gateway-Document"]), set()).add(str(msg["Message-ID"]))
    assert all(len(v) == 1 for v in ids.values()), "a resend changed its Message-ID"
