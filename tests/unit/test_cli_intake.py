"""The intake commands on a real SQLite database: allowed senders, the quarantine, and the
source of each document."""

from __future__ import annotations

import json
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest

from gateway import cli, config, office
from gateway.config import DeliverySettings, DossierSettings
from gateway.intake.accept import Envelope, Route, accept_message
from gateway.pipeline.runner import PipelineRunner
from gateway.store.db import Store, open_store
from gateway.store.models import Message


@pytest.fixture
def cfg(tmp_path: Path) -> str:
    path = tmp_path / "gw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{tmp_path}/var"\n'
        f'[database]\nurl = "sqlite:///{tmp_path}/var/gw.db"\n'
    )
    assert cli.main(["-c", str(path), "db", "upgrade"]) == 0
    assert cli.main(["-c", str(path), "dossier", "add", "acme", "--integration", "none"]) == 0
    return str(path)


def _store(cfg: str) -> Store:
    settings = config.load(cfg)
    return open_store(settings.database.url, settings.blob_dir)


def _out(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out


def test_allowed_senders_round_trip(cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-c", cfg, "dossier", "senders", "acme"]) == 0
    assert "anyone may send" in _out(capsys)
    assert (
        cli.main(["-c", cfg, "dossier", "allow", "acme", "Alice@Client.example", "@Partner.be"])
        == 0
    )
    assert cli.main(["-c", cfg, "dossier", "allow", "acme", "alice@client.example"]) == 0
    _out(capsys)
    assert cli.main(["-c", cfg, "dossier", "senders", "acme", "--json"]) == 0
    assert json.loads(_out(capsys)) == {
        "dossier": "acme",
        "allowed_senders": ["@partner.be", "alice@client.example"],
    }
    assert cli.main(["-c", cfg, "dossier", "disallow", "acme", "@partner.be"]) == 0
    assert _out(capsys).split() == ["alice@client.example"]
    assert cli.main(["-c", cfg, "dossier", "show", "acme", "--json"]) == 0
    assert json.loads(_out(capsys))["allowed_senders"] == ["alice@client.example"]


def test_bad_sender_entries_are_refused_by_name(
    cfg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["-c", cfg, "dossier", "allow", "acme", "not-an-address"]) == 1
    assert "allowed sender 'not-an-address'" in capsys.readouterr().err
    assert cli.main(["-c", cfg, "dossier", "disallow", "acme", "x@y.example"]) == 1
    assert "not on the allowed senders: x@y.example" in capsys.readouterr().err
    assert cli.main(["-c", cfg, "dossier", "allow", "nope", "x@y.example"]) == 1
    assert "no dossier 'nope'" in capsys.readouterr().err


def test_config_list_is_applied_exactly_and_absent_list_is_left_alone(cfg: str) -> None:
    store = _store(cfg)
    with store.session.begin() as session:
        office.allow_senders(session, "acme", ["a@x.example"])
        office.put_dossier(session, DossierSettings(slug="acme", integration="none"))
        assert office.allowed_senders(session, "acme") == ["a@x.example"]
        spec = DossierSettings(slug="acme", integration="none", allowed_senders=["@y.example"])
        office.put_dossier(session, spec)
        assert office.allowed_senders(session, "acme") == ["@y.example"]


def _raw(subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "x@y.example"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject}@y.example>"
    msg.set_content("hi")
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="a.pdf")
    return msg.as_bytes(policy=SMTP)


def test_quarantine_list_release_and_drop(cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = _store(cfg)
    envelope = Envelope("folder", "", [], [Route("acme")], source_ref="acme/a.eml")
    reason = "dossier acme accepts documents only from its allowed senders: x"
    first = accept_message(store, _raw("one"), envelope, quarantine=reason)
    second = accept_message(store, _raw("two"), envelope, quarantine=reason)
    assert cli.main(["-c", cfg, "quarantine", "list", "--json"]) == 0
    rows = [json.loads(line) for line in _out(capsys).splitlines()]
    assert [(r["id"], r["source"], r["dossiers"], r["reason"]) for r in rows] == [
        (first.message_id, "folder", ["acme"], reason),
        (second.message_id, "folder", ["acme"], reason),
    ]
    assert cli.main(["-c", cfg, "quarantine", "release", str(first.message_id)]) == 0
    assert cli.main(["-c", cfg, "quarantine", "drop", str(second.message_id)]) == 0
    assert cli.main(["-c", cfg, "quarantine", "release", str(second.message_id)]) == 1
    assert "is not in quarantine" in capsys.readouterr().err
    with store.session() as session:
        released = session.get_one(Message, first.message_id)
        dropped = session.get_one(Message, second.message_id)
        assert (released.verdict, released.processed_at) == ("released", None)
        assert dropped.verdict == "dropped"
    runner = PipelineRunner(store, DeliverySettings(), on_queued=_Wake())
    assert runner.process_batch() == 1
    _out(capsys)  # the pipeline's own log lines
    assert cli.main(["-c", cfg, "doc", "list", "--json"]) == 0
    docs = [json.loads(line) for line in _out(capsys).splitlines()]
    assert [(d["dossier"], d["source"], d["message"]) for d in docs] == [
        ("acme", "folder", first.message_id)
    ]
    assert cli.main(["-c", cfg, "doc", "list"]) == 0
    assert " folder " in _out(capsys)
    assert cli.main(["-c", cfg, "message", "show", str(first.message_id), "--json"]) == 0
    shown = json.loads(_out(capsys))
    assert shown["verdict"] == "released"
    assert [d["filename"] for d in shown["documents"]] == ["a.pdf"]
    kinds = [e["kind"] for e in shown["events"]]
    assert kinds[:2] == ["message_quarantined", "message_released"]
    skipped = next(e for e in shown["events"] if e["kind"] == "parts_skipped")
    assert skipped["parts"] == [
        {"name": "attachment-1.txt", "type": "text/plain", "why": "message body"}
    ]
    assert cli.main(["-c", cfg, "message", "show", "999"]) == 1


class _Wake:
    def set(self) -> None:
        pass


def test_a_mail_without_documents_is_recorded_as_such(
    cfg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _store(cfg)
    raw = b"From: x@y.example\r\nMessage-ID: <body-only@y.example>\r\nSubject: hi\r\n\r\nhello\r\n"
    taken = accept_message(store, raw, Envelope("smtp", "x@y.example", [], [Route("acme")]))
    runner = PipelineRunner(store, DeliverySettings(), on_queued=_Wake())
    assert runner.process_batch() == 1
    _out(capsys)
    assert cli.main(["-c", cfg, "message", "show", str(taken.message_id), "--json"]) == 0
    shown = json.loads(_out(capsys))
    assert (shown["verdict"], shown["reason"], shown["documents"]) == (
        "accepted",
        "no documents in this message",
        [],
    )
