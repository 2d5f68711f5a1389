"""The IMAP door against a real Dovecot: new mail during IDLE, a connection cut mid-FETCH, a
UIDVALIDITY reset, a crash between commit and post-action (real daemon, SIGKILL), quarantine
for senders a dossier does not allow. In every case: each message stored exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any, TypeVar

import pytest
from integration.dovecot import Dovecot
from integration.fault_proxy import FaultProxy
from integration.gateway_proc import start_gateway
from integration.smtp_door import dossier
from sqlalchemy import select

from gateway import office
from gateway.config import ImapAccountSettings, IntakeSettings
from gateway.intake.imap import ImapPoller
from gateway.store.db import Store, open_store, upgrade
from gateway.store.models import ImapSeen, Message

T = TypeVar("T")


def wait_for(what: Callable[[], T], timeout: float = 10.0, why: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = what()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {why or what}")
        time.sleep(0.05)


def raw_mail(subject: str, sender: str = "client@example.com") -> bytes:
    msg = EmailMessage()
    msg["Return-Path"] = f"<{sender}>"
    msg["From"] = sender
    msg["To"] = "acme@docs.office.example"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject}@example.com>"
    msg.set_content("invoice attached")
    msg.add_attachment(
        b"%PDF-1.4 " + subject.encode(),
        maintype="application",
        subtype="pdf",
        filename=f"{subject}.pdf",
    )
    return msg.as_bytes(policy=SMTP)


class Account:
    """A plain imaplib client for the test's own view of the mailbox."""

    def __init__(self, dovecot: Dovecot) -> None:
        self.dovecot = dovecot

    def _client(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.dovecot.port, timeout=10)
        client.login(self.dovecot.user, self.dovecot.password)
        return client

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        client = self._client()
        try:
            assert client.append(folder, None, None, raw)[0] == "OK"
        finally:
            client.logout()

    def count(self, folder: str, criteria: str = "ALL") -> int:
        client = self._client()
        try:
            status, _ = client.select(f'"{folder}"', readonly=True)
            if status != "OK":
                return 0
            _, data = client.uid("SEARCH", criteria)
            return len(data[0].split())
        finally:
            client.logout()


@pytest.fixture
def account(dovecot: Dovecot, tmp_path: Path) -> Account:
    dovecot.reset_mailbox()
    return Account(dovecot)


def settings(dovecot: Dovecot, tmp_path: Path, **kw: Any) -> ImapAccountSettings:
    password = tmp_path / "imap.pw"
    password.write_text(dovecot.password + "\n")
    base = ImapAccountSettings(
        name="acme-inbox",
        host="127.0.0.1",
        port=dovecot.port,
        user=dovecot.user,
        password_file=str(password),
        tls="none",
        dossier="acme",
        poll_interval=30.0,
        timeout=5.0,
        reconnect_max=2.0,
    )
    return replace(base, **kw)


class Poller:
    """ImapPoller.run() in its own event loop thread, against a real SQLite store."""

    def __init__(
        self,
        tmp_path: Path,
        account: ImapAccountSettings,
        senders: list[str] | None = None,
        intake: IntakeSettings | None = None,
    ) -> None:
        self.store: Store = open_store(f"sqlite:///{tmp_path}/gw.db", tmp_path / "blobs")
        upgrade(self.store.engine)
        with self.store.session.begin() as session:
            office.put_dossier(session, dossier("acme", senders))
        self.loop = asyncio.new_event_loop()
        self.wake = asyncio.Event()
        self.poller = ImapPoller(account, self.store, intake or IntakeSettings(), self.wake)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.task = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=5)

    async def _start(self) -> asyncio.Task[None]:
        return asyncio.create_task(self.poller.run())

    def messages(self) -> list[Message]:
        with self.store.session() as session:
            return list(session.scalars(select(Message).order_by(Message.id)))

    def seen(self) -> list[ImapSeen]:
        with self.store.session() as session:
            return list(session.scalars(select(ImapSeen).order_by(ImapSeen.id)))

    def stop(self) -> None:
        if not self.thread.is_alive():
            return

        async def cancel() -> None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            # A store still running in a worker thread would outlive the test otherwise.
            await asyncio.get_running_loop().shutdown_default_executor()

        asyncio.run_coroutine_threadsafe(cancel(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.store.engine.dispose()


@pytest.fixture
def poller_factory(tmp_path: Path) -> Iterator[Callable[..., Poller]]:
    started: list[Poller] = []

    def make(account: ImapAccountSettings, **kw: Any) -> Poller:
        poller = Poller(tmp_path, account, **kw)
        started.append(poller)
        return poller

    yield make
    for poller in started:
        poller.stop()


def test_mail_arriving_during_idle_is_taken_at_once_and_moved(
    account: Account, dovecot: Dovecot, tmp_path: Path, poller_factory: Callable[..., Poller]
) -> None:
    account.append(raw_mail("before-start"))
    poller = poller_factory(settings(dovecot, tmp_path))
    wait_for(lambda: poller.poller.synced, why="first sync")
    assert [m.subject for m in poller.messages()] == ["before-start"]
    started = time.monotonic()
    account.append(raw_mail("during-idle"))
    wait_for(lambda: len(poller.messages()) == 2, timeout=10, why="the IDLE push")
    assert time.monotonic() - started < 5  # poll_interval is 30 s: only IDLE explains this
    wait_for(lambda: account.count("Processed") == 2, why="both moved")
    assert account.count("INBOX") == 0
    message = poller.messages()[1]
    assert message.source == "imap"
    assert message.routes == [{"dossier": "acme", "hint": ""}]
    assert message.source_ref.startswith("acme-inbox/INBOX/")
    assert all(s.done_at is not None for s in poller.seen())


def test_connection_cut_mid_fetch_is_retried_and_taken_once(
    account: Account, dovecot: Dovecot, tmp_path: Path, poller_factory: Callable[..., Poller]
) -> None:
    proxy = FaultProxy(dovecot.port, cut_on=b"BODY[] {", cuts=1)
    try:
        account.append(raw_mail("cut"))
        poller = poller_factory(settings(dovecot, tmp_path, port=proxy.port))
        wait_for(lambda: account.count("Processed") == 1, timeout=20, why="taken after the cut")
        assert proxy.connections >= 2
        assert proxy.cuts_left == 0
        assert [m.subject for m in poller.messages()] == ["cut"]
        assert len(poller.seen()) == 1
    finally:
        proxy.stop()


def test_uidvalidity_reset_does_not_take_anything_twice(
    account: Account, dovecot: Dovecot, tmp_path: Path, poller_factory: Callable[..., Poller]
) -> None:
    account.append(raw_mail("one"))
    account.append(raw_mail("two"))
    poller = poller_factory(settings(dovecot, tmp_path, post_action="flag", poll_interval=0.5))
    wait_for(lambda: len(poller.seen()) == 2 and all(s.done_at for s in poller.seen()))
    assert account.count("INBOX", "KEYWORD $GatewayTaken") == 2
    before = {s.uidvalidity for s in poller.seen()}
    dovecot.doveadm("mailbox", "update", "-u", dovecot.user, "--uid-validity", "12345", "INBOX")
    dovecot.kick()
    wait_for(lambda: len(poller.seen()) == 4, timeout=15, why="the new UIDs recorded")
    seen = poller.seen()
    assert {s.uidvalidity for s in seen} == before | {12345}
    assert len(poller.messages()) == 2
    old = {s.uid: s.message_id for s in seen if s.uidvalidity != 12345}
    new = {s.uid: s.message_id for s in seen if s.uidvalidity == 12345}
    assert sorted(old.values()) == sorted(new.values())


def test_the_same_message_twice_in_the_mailbox_is_stored_once(
    account: Account, dovecot: Dovecot, tmp_path: Path, poller_factory: Callable[..., Poller]
) -> None:
    raw = raw_mail("twice")
    account.append(raw)
    account.append(raw)
    poller = poller_factory(settings(dovecot, tmp_path, processed_folder="Verwerkt facturen"))
    wait_for(lambda: account.count("Verwerkt facturen") == 2, why="both moved")
    assert len(poller.messages()) == 1
    assert {s.message_id for s in poller.seen()} == {poller.messages()[0].id}


def test_sender_not_allowed_is_quarantined_not_lost(
    account: Account, dovecot: Dovecot, tmp_path: Path, poller_factory: Callable[..., Poller]
) -> None:
    account.append(raw_mail("forged", sender="mallory@evil.example"))
    account.append(raw_mail("fine", sender="client@example.com"))
    poller = poller_factory(settings(dovecot, tmp_path), senders=["@example.com"])
    wait_for(lambda: account.count("Processed") == 2, why="both moved")
    verdicts = {m.subject: (m.verdict, m.reason) for m in poller.messages()}
    assert verdicts["fine"] == ("accepted", "")
    assert verdicts["forged"] == (
        "quarantined",
        "dossier acme accepts documents only from its allowed senders: "
        "envelope sender mallory@evil.example is not allowed",
    )


def test_crash_between_commit_and_post_action_takes_the_message_once(
    account: Account, dovecot: Dovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = tmp_path / "imap.pw"
    password.write_text(dovecot.password + "\n")
    extra = f"""
[[dossiers]]
slug = "acme"
integration = "none"
addresses = ["acme@docs.office.example"]

[[imap]]
name = "acme-inbox"
host = "127.0.0.1"
port = {dovecot.port}
tls = "none"
user = "{dovecot.user}"
password_file = "{password}"
dossier = "acme"
poll_interval = 0.5
timeout = 5.0
"""
    monkeypatch.setenv("GW_CRASH_AT", "imap_after_commit")
    gateway = start_gateway(tmp_path, extra)
    try:
        account.append(raw_mail("crash"))
        assert gateway.proc is not None
        assert gateway.proc.wait(timeout=20) == -signal.SIGKILL
        assert account.count("INBOX") == 1  # stored, but the post-action never ran
        assert account.count("Processed") == 0
        monkeypatch.delenv("GW_CRASH_AT")
        gateway.start()
        wait_for(lambda: account.count("Processed") == 1, timeout=20, why="post-action")
        assert account.count("INBOX") == 0
        docs = gateway.wait_for(lambda: gateway.docs())
        assert [(d["filename"], d["source"]) for d in docs] == [("crash.pdf", "imap")]
        out = gateway.cli("quarantine", "list", "--json").stdout
        assert out == ""
        assert dovecot.password not in gateway.log.read_text()  # the daemon logs at debug here
    finally:
        gateway.stop()


def test_implicit_tls_with_a_pinned_ca_and_fail_closed_without(
    account: Account, dovecot: Dovecot, tmp_path: Path, poller_factory: Callable[..., Poller]
) -> None:
    account.append(raw_mail("tls"))
    untrusted = poller_factory(settings(dovecot, tmp_path, tls="ssl", port=dovecot.tls_port))
    time.sleep(1.5)
    assert not untrusted.poller.synced
    assert untrusted.messages() == []
    untrusted.stop()
    trusted = settings(dovecot, tmp_path, tls="ssl", port=dovecot.tls_port, ca_file=dovecot.ca_file)
    poller = poller_factory(trusted)
    wait_for(lambda: account.count("Processed") == 1, why="taken over TLS")
    assert [m.subject for m in poller.messages()] == ["tls"]


def test_catch_all_routes_by_delivered_to_and_quarantines_strangers(
    account: Account, dovecot: Dovecot, tmp_path: Path, poller_factory: Callable[..., Poller]
) -> None:
    account.append(b"Delivered-To: acme+bank@docs.office.example\r\n" + raw_mail("routed"))
    account.append(b"Delivered-To: stranger@docs.office.example\r\n" + raw_mail("stranger"))
    poller = poller_factory(settings(dovecot, tmp_path, dossier="", catch_all=True))
    wait_for(lambda: account.count("Processed") == 2, why="both moved")
    found = {m.subject: m for m in poller.messages()}
    assert found["routed"].routes == [{"dossier": "acme", "hint": "bank"}]
    assert found["routed"].verdict == "accepted"
    assert (found["stranger"].verdict, found["stranger"].reason) == (
        "quarantined",
        "catch-all mailbox: no dossier has the address it was for (stranger@docs.office.example)",
    )


def test_without_idle_it_polls_and_takes_at_most_the_run_cap(
    account: Account, dovecot: Dovecot, tmp_path: Path, poller_factory: Callable[..., Poller]
) -> None:
    for subject in ("a", "b", "c"):
        account.append(raw_mail(subject))
    capped = settings(dovecot, tmp_path, idle=False, max_messages_per_run=1, poll_interval=1.0)
    poller = poller_factory(capped)
    wait_for(lambda: poller.poller.synced, why="first sync")
    first = len(poller.messages())
    assert first == 1
    wait_for(lambda: account.count("Processed") == 3, timeout=15, why="the rest, one per run")
    assert sorted(m.subject for m in poller.messages()) == ["a", "b", "c"]


def test_too_big_is_left_on_the_server_and_a_tiny_budget_still_progresses(
    account: Account, dovecot: Dovecot, tmp_path: Path, poller_factory: Callable[..., Poller]
) -> None:
    big = raw_mail("big").replace(b"invoice attached", b"x" * 6000)
    account.append(big)
    account.append(raw_mail("small-1"))
    account.append(raw_mail("small-2"))
    limits = settings(
        dovecot,
        tmp_path,
        idle=False,
        poll_interval=0.5,
        max_message_size=4000,
        max_bytes_per_run=10,
    )
    poller = poller_factory(limits)
    wait_for(lambda: account.count("Processed") == 2, timeout=15, why="the small ones")
    time.sleep(1.0)
    assert sorted(m.subject for m in poller.messages()) == ["small-1", "small-2"]
    assert account.count("INBOX") == 1


def test_wrong_password_backs_off_and_a_corrected_file_is_picked_up(
    account: Account, dovecot: Dovecot, tmp_path: Path, poller_factory: Callable[..., Poller]
) -> None:
    account.append(raw_mail("after-fix"))
    limits = settings(dovecot, tmp_path)
    Path(limits.password_file).write_text("wrong\n")
    poller = poller_factory(limits)
    time.sleep(2.0)
    assert not poller.poller.synced
    assert poller.messages() == []
    Path(limits.password_file).write_text(dovecot.password + "\n")  # rotated, no restart
    wait_for(lambda: account.count("Processed") == 1, timeout=15, why="login with the new file")
    assert [m.subject for m in poller.messages()] == ["after-fix"]
