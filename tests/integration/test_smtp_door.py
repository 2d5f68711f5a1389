"""The SMTP door as a client sees it: routing on the envelope, allowed senders refused at RCPT
or after DATA, explicit limits with enhanced status codes, STARTTLS, and smuggling refused."""

from __future__ import annotations

import hashlib
import os
import shutil
import smtplib
import socket
import ssl
import stat
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
import trustme
from integration.smtp_door import SmtpDoor, dossier

from gateway import office
from gateway.config import DeliverySettings
from gateway.intake.spool import FLUSH_SIZE
from gateway.pipeline.runner import PipelineRunner

GOOD = "alice@allowed.example"


def _mail(sender: str = GOOD, to: str = "acme@docs.office.example", pdf: bool = True) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = "invoice"
    msg["Message-ID"] = f"<{time.monotonic_ns()}@allowed.example>"
    msg.set_content("attached")
    if pdf:
        msg.add_attachment(
            b"%PDF-1.4 invoice", maintype="application", subtype="pdf", filename="inv.pdf"
        )
    return msg.as_bytes(policy=SMTP)


@pytest.fixture
def door(tmp_path: Path) -> Iterator[SmtpDoor]:
    server = SmtpDoor(
        tmp_path,
        [dossier("acme", [GOOD]), dossier("open"), dossier("beta")],
        max_recipients=3,
        max_message_size=50_000,
    )
    try:
        yield server
    finally:
        server.stop()


def _client(door: SmtpDoor) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", door.port, timeout=10)
    client.ehlo("client.example")
    return client


def _reply(client: smtplib.SMTP, command: str) -> tuple[int, str]:
    code, text = client.docmd(command)
    return code, text.decode()


def test_unknown_address_is_refused_at_rcpt_and_nothing_is_stored(door: SmtpDoor) -> None:
    with _client(door) as client:
        client.mail(GOOD)
        code, text = client.rcpt("nobody@docs.office.example")
        assert (code, text.decode()) == (
            550,
            "5.1.1 <nobody@docs.office.example>: no dossier has this address",
        )
    assert door.messages() == []


@pytest.mark.parametrize(
    "rcpt",
    [
        "victim@gmail.com",
        '"acme@docs.office.example"@evil.example',
        "acme%evil.example@docs.office.example",
        "acme@docs.office.example.evil.example",
        "acme@evil.example",
        "+purchase@docs.office.example",
    ],
)
def test_never_a_relay(door: SmtpDoor, rcpt: str) -> None:
    with _client(door) as client:
        client.mail(GOOD)
        code, _ = _reply(client, f"RCPT TO:<{rcpt}>")
        assert code in (550, 553)
    assert door.messages() == []


def test_address_harvesting_is_cut_off(door: SmtpDoor) -> None:
    with _client(door) as client:
        client.mail(GOOD)
        for i in range(20):
            assert client.rcpt(f"guess{i}@docs.office.example")[0] == 550
        code, text = client.rcpt("guess20@docs.office.example")
        assert (code, text.decode()) == (
            421,
            "4.7.0 Too many unknown recipients, closing connection",
        )
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()


def test_sub_address_routes_to_the_dossier_with_a_type_hint(door: SmtpDoor) -> None:
    with _client(door) as client:
        client.sendmail(GOOD, ["acme+purchase@docs.office.example"], _mail())
        client.sendmail(GOOD, ["open+whatever@docs.office.example"], _mail(to="open@x"))
    routes = [m.routes for m in door.messages()]
    assert routes == [[{"dossier": "acme", "hint": "purchase"}], [{"dossier": "open", "hint": ""}]]


def test_each_dossier_of_one_transaction_gets_its_own_documents(door: SmtpDoor) -> None:
    with _client(door) as client:
        client.sendmail(
            GOOD,
            ["acme@docs.office.example", "beta+bank@docs.office.example"],
            _mail(),
        )
    [message] = door.messages()
    assert sorted(r["dossier"] for r in message.routes) == ["acme", "beta"]
    runner = PipelineRunner(door.store, DeliverySettings(), on_queued=_Never())
    assert runner.process_batch() == 1
    with door.store.session() as session:
        from gateway.store.models import Document

        docs = sorted((d.dossier.slug, d.filename, d.reason) for d in session.query(Document))
    assert [(slug, name) for slug, name, _ in docs] == [("acme", "inv.pdf"), ("beta", "inv.pdf")]
    assert docs[1][2].startswith("type from the address hint +bank")


class _Never:
    def set(self) -> None:
        pass


def test_envelope_sender_not_allowed_is_refused_at_rcpt_naming_the_policy(door: SmtpDoor) -> None:
    with _client(door) as client:
        client.mail("mallory@evil.example")
        code, text = client.rcpt("acme@docs.office.example")
        assert code == 550
        assert text.decode() == (
            "5.7.1 dossier acme accepts documents only from its allowed senders: "
            "envelope sender mallory@evil.example is not allowed"
        )
        assert client.rcpt("open@docs.office.example")[0] == 250
        client.data(_mail("mallory@evil.example"))
    assert [m.routes for m in door.messages()] == [[{"dossier": "open", "hint": ""}]]


def test_addresses_and_senders_added_while_running_count_at_once(door: SmtpDoor) -> None:
    """The door answers from a snapshot of the routing tables, but never refuses from an old
    one: what the CLI or a reload just added is accepted on the next command."""
    late = "late@docs.office.example"
    with _client(door) as client:
        assert client.sendmail(GOOD, ["acme@docs.office.example"], _mail()) == {}
        client.mail("carol@partner.example")
        assert client.rcpt("acme@docs.office.example")[0] == 550
        assert client.rcpt(late)[0] == 550
        client.rset()
        with door.store.session.begin() as session:
            office.put_dossier(session, dossier("acme", [GOOD, "carol@partner.example"]))
            office.put_dossier(session, dossier("late"))
        client.mail("carol@partner.example")
        assert client.rcpt("acme@docs.office.example")[0] == 250
        assert client.rcpt(late)[0] == 250
        assert client.data(_mail("carol@partner.example", to=late))[0] == 250
    assert [m.routes for m in door.messages()][-1] == [
        {"dossier": "acme", "hint": ""},
        {"dossier": "late", "hint": ""},
    ]


def test_a_sender_allowed_while_running_passes_the_check_after_data(door: SmtpDoor) -> None:
    with _client(door) as client:
        client.mail(GOOD)
        assert client.rcpt("acme@docs.office.example")[0] == 250
        with door.store.session.begin() as session:
            office.put_dossier(session, dossier("acme", [GOOD, "carol@partner.example"]))
        assert client.data(_mail("carol@partner.example"))[0] == 250


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ("From: mallory@evil.example\r\n", "header From mallory@evil.example is not allowed"),
        (
            f"From: {GOOD}\r\nFrom: mallory@evil.example\r\n",
            "the From header is not exactly one unambiguous mailbox",
        ),
        (
            f"From: {GOOD})<mallory@evil.example>\r\n",
            "the From header is not exactly one unambiguous mailbox",
        ),
    ],
)
def test_forged_header_from_is_refused_after_data(door: SmtpDoor, headers: str, why: str) -> None:
    raw = f"{headers}To: acme@docs.office.example\r\nSubject: x\r\n\r\nbody\r\n".encode()
    with _client(door) as client:
        client.mail(GOOD)
        assert client.rcpt("acme@docs.office.example")[0] == 250
        code, text = client.data(raw)
    assert code == 550
    assert text.decode() == (
        f"5.7.1 dossier acme accepts documents only from its allowed senders: {why}"
    )
    assert door.messages() == []


def _rows(door: SmtpDoor) -> dict[str, bytes]:
    """sha256 → the bytes of every blob row."""
    with door.store.engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT sha256, data FROM blobs")
        return {digest: bytes(data) for digest, data in rows}


def _large_mail() -> bytes:
    """A message well above the spool's FLUSH_SIZE: it goes to a spool file as it streams."""
    return _mail() + (b"y" * 78 + b"\r\n") * (2 * FLUSH_SIZE // 80)


def test_a_small_message_is_durable_with_its_row_and_a_refused_one_never_touches_the_disk(
    door: SmtpDoor, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    fsync = os.fsync

    def counted(fd: int) -> None:
        synced.append(fd)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", counted)
    forged = b"From: mallory@evil.example\r\nSubject: x\r\n\r\nbody\r\n"
    raw = _mail()
    with _client(door) as client:
        client.mail(GOOD)
        client.rcpt("acme@docs.office.example")
        assert client.data(forged)[0] == 550
        assert client.sendmail(GOOD, ["acme@docs.office.example"], raw) == {}
    assert synced == []  # no file: the bytes were committed with the row
    (message,) = door.messages()
    assert message.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert _rows(door) == {message.raw_sha256: raw}
    assert not any(p.is_file() for p in (door.store.blobs.root).rglob("*"))


def test_a_large_message_is_fsynced_once_with_its_directory_and_not_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    door = SmtpDoor(tmp_path, [dossier("acme", [GOOD])], max_message_size=4 * FLUSH_SIZE)
    synced: list[bool] = []
    fsync = os.fsync

    def counted(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", counted)
    raw = _large_mail()
    try:
        with _client(door) as client:
            assert client.sendmail(GOOD, ["acme@docs.office.example"], raw) == {}
        (message,) = door.messages()
        assert _rows(door) == {}
    finally:
        door.stop()
    assert sorted(synced) == [False, True]  # the message's file, then the blob directory
    assert door.store.blobs.path(message.raw_sha256).read_bytes() == raw


def test_recipient_limit(door: SmtpDoor) -> None:
    with _client(door) as client:
        client.mail(GOOD)
        for rcpt in ("acme", "open", "beta"):
            assert client.rcpt(f"{rcpt}@docs.office.example")[0] == 250
        code, text = client.rcpt("acme+sales@docs.office.example")
    assert (code, text.decode()) == (452, "4.5.3 Too many recipients")


def test_size_is_advertised_and_enforced_with_552_5_3_4(door: SmtpDoor) -> None:
    with _client(door) as client:
        assert client.esmtp_features["size"] == "50000"
        code, text = _reply(client, "MAIL FROM:<alice@allowed.example> SIZE=60000")
        assert (code, text) == (552, "5.3.4 Message size exceeds fixed maximum message size")
        client.mail(GOOD)
        client.rcpt("open@docs.office.example")
        code, text = client.data(_mail() + (b"x" * 70 + b"\r\n") * 1000)
        assert (code, text.decode()) == (552, "5.3.4 Message too big for system")
    assert door.messages() == []


def test_line_too_long_is_refused(door: SmtpDoor) -> None:
    raw = b"From: alice@allowed.example\r\nSubject: x\r\n\r\n" + b"y" * 1500 + b"\r\n"
    with _client(door) as client:
        client.mail(GOOD)
        client.rcpt("open@docs.office.example")
        code, text = client.data(raw)
    assert (code, text.decode()) == (500, "5.5.2 Line too long (RFC 5321 4.5.3.1.6)")
    assert door.messages() == []


def test_a_mail_loop_is_refused(door: SmtpDoor) -> None:
    lines = [b"Received: from hop%d by relay; Sat, 21 Nov 2026\r\n" % i for i in range(51)]
    hops = b"".join(lines)
    with _client(door) as client:
        client.mail(GOOD)
        client.rcpt("open@docs.office.example")
        code, text = client.data(hops + _mail())
        assert code == 554
        assert text.decode().startswith("5.4.6 Too many hops")
        assert (
            client.sendmail(GOOD, ["open@docs.office.example"], b"".join(lines[:50]) + _mail())
            == {}
        )
    assert len(door.messages()) == 1


def test_the_same_message_twice_is_stored_once(door: SmtpDoor) -> None:
    raw = _mail()
    with _client(door) as client:
        first = client.sendmail(GOOD, ["acme@docs.office.example"], raw)
        client.sendmail(GOOD, ["acme@docs.office.example"], raw)
    assert first == {}
    assert len(door.messages()) == 1


def _raw_session(door: SmtpDoor) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", door.port), timeout=5)
    assert _read_reply(sock).startswith(b"220")
    return sock


def _read_reply(sock: socket.socket) -> bytes:
    """One complete (possibly multi-line) reply."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return data


def _send(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    return _read_reply(sock)


@pytest.mark.parametrize(
    "smuggle",
    [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n"],
    ids=["LF.LF", "LF.CRLF", "CRLF.LF", "CRLF.CR", "CR.CRLF"],
)
def test_smuggling_payload_is_refused_and_no_second_message_appears(
    door: SmtpDoor, smuggle: bytes
) -> None:
    sock = _raw_session(door)
    try:
        _send(sock, b"EHLO attacker.example\r\n")
        assert _send(sock, b"MAIL FROM:<alice@allowed.example>\r\n").startswith(b"250")
        assert _send(sock, b"RCPT TO:<open@docs.office.example>\r\n").startswith(b"250")
        assert _send(sock, b"DATA\r\n").startswith(b"354")
        payload = (
            b"From: alice@allowed.example\r\nSubject: first\r\n\r\nhello"
            + smuggle
            + b"MAIL FROM:<ceo@allowed.example>\r\nRCPT TO:<acme@docs.office.example>\r\n"
            + b"DATA\r\nFrom: ceo@allowed.example\r\n\r\nsmuggled\r\n.\r\n"
        )
        reply = _send(sock, payload)
        assert reply.startswith(b"550 5.6.0"), reply
        assert _send(sock, b"NOOP\r\n").startswith(b"250")
    finally:
        sock.close()
    assert door.messages() == []


def test_session_limit_answers_421_and_frees_up(tmp_path: Path) -> None:
    door = SmtpDoor(tmp_path, [dossier("open")], max_sessions=2)
    try:
        first, second = _raw_session(door), _raw_session(door)
        third = socket.create_connection(("127.0.0.1", door.port), timeout=5)
        assert _read_reply(third) == b"421 4.7.0 Too many connections, try again later\r\n"
        assert third.recv(10) == b""
        third.close()
        first.close()
        deadline = time.monotonic() + 5
        while True:
            fourth = socket.create_connection(("127.0.0.1", door.port), timeout=5)
            greeting = _read_reply(fourth)
            fourth.close()
            if greeting.startswith(b"220") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert greeting.startswith(b"220")
        second.close()
    finally:
        door.stop()


def test_idle_session_is_closed_after_the_timeout(tmp_path: Path) -> None:
    door = SmtpDoor(tmp_path, [dossier("open")], timeout=0.5)
    try:
        sock = _raw_session(door)
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - started < 4
        sock.close()
    finally:
        door.stop()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("gateway.localhost", "127.0.0.1")
    folder = tmp_path_factory.mktemp("tls")
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    return ca, folder / "cert.pem", folder / "key.pem"


def test_require_tls_refuses_mail_before_starttls_and_accepts_after(
    tmp_path: Path, tls_files: tuple[trustme.CA, Path, Path]
) -> None:
    ca, cert, key = tls_files
    door = SmtpDoor(
        tmp_path, [dossier("open")], tls_cert=str(cert), tls_key=str(key), require_tls=True
    )
    try:
        with _client(door) as client:
            assert "starttls" in client.esmtp_features
            code, text = _reply(client, "MAIL FROM:<alice@allowed.example>")
            assert (code, text) == (530, "5.7.0 Must issue a STARTTLS command first")
            context = ssl.create_default_context()
            ca.configure_trust(context)
            client.starttls(context=context)
            client.ehlo("client.example")
            assert client.sendmail(GOOD, ["open@docs.office.example"], _mail()) == {}
        assert len(door.messages()) == 1
    finally:
        door.stop()


def test_a_message_of_megabytes_over_tls_is_stored_whole(
    tmp_path: Path, tls_files: tuple[trustme.CA, Path, Path]
) -> None:
    """Reading pauses while each MiB goes to disk: the TLS transport must stop and go on."""
    ca, cert, key = tls_files
    door = SmtpDoor(tmp_path, [dossier("open")], tls_cert=str(cert), tls_key=str(key))
    body = _mail().replace(b"attached", b"attached\r\n" + b"Line of text.\r\n" * 300_000)
    try:
        with _client(door) as client:
            context = ssl.create_default_context()
            ca.configure_trust(context)
            client.starttls(context=context)
            client.ehlo("client.example")
            assert client.sendmail(GOOD, ["open@docs.office.example"], body) == {}
        (message,) = door.messages()
        assert message.size == len(body)
        assert message.raw_sha256 == hashlib.sha256(body).hexdigest()
    finally:
        door.stop()


def test_commands_pipelined_with_starttls_are_discarded(
    tmp_path: Path, tls_files: tuple[trustme.CA, Path, Path]
) -> None:
    ca, cert, key = tls_files
    door = SmtpDoor(tmp_path, [dossier("open")], tls_cert=str(cert), tls_key=str(key))
    try:
        sock = _raw_session(door)
        _send(sock, b"EHLO attacker.example\r\n")
        reply = _send(sock, b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
        assert reply.startswith(b"220")
        context = ssl.create_default_context()
        ca.configure_trust(context)
        tls = context.wrap_socket(sock, server_hostname="gateway.localhost")
        _send(tls, b"EHLO attacker.example\r\n")
        reply = _send(tls, b"RCPT TO:<open@docs.office.example>\r\n")
        assert reply.startswith(b"503"), reply
        tls.close()
    finally:
        door.stop()


def test_auth_only_after_tls_and_it_stands_in_for_alignment(
    tmp_path: Path, tls_files: tuple[trustme.CA, Path, Path]
) -> None:
    from gateway.config import IntakeSettings
    from gateway.intake.smtpd.login import hash_password

    ca, cert, key = tls_files
    users = tmp_path / "smtp-users"
    users.write_text(f"alice:{hash_password('s3cret')}\n")
    door = SmtpDoor(
        tmp_path,
        [dossier("acme", [GOOD])],
        IntakeSettings(sender_policy="aligned"),
        tls_cert=str(cert),
        tls_key=str(key),
        auth_file=str(users),
    )
    try:
        with _client(door) as client:
            assert "auth" not in client.esmtp_features
            code, text = _reply(client, "AUTH PLAIN AGFsaWNlAHMzY3JldA==")
            assert (code, text) == (
                538,
                "5.7.11 Encryption required for requested authentication mechanism",
            )
            context = ssl.create_default_context()
            ca.configure_trust(context)
            client.starttls(context=context)
            client.ehlo("client.example")
            assert "PLAIN" in client.esmtp_features["auth"]
            code, text = _reply(client, "AUTH PLAIN AGFsaWNlAHdyb25n")  # alice / wrong
            assert (code, text) == (535, "5.7.8 Authentication credentials invalid")
            client.login("alice", "s3cret")  # third AUTH of this connection: still allowed
            assert client.sendmail(GOOD, ["acme@docs.office.example"], _mail()) == {}
        [message] = door.messages()
        assert message.auth == {"smtp_auth": "alice"}
        with _client(door) as client:
            client.starttls(context=context)
            client.ehlo("client.example")
            for _ in range(3):
                code, _text = _reply(client, "AUTH PLAIN AGFsaWNlAHdyb25n")
                assert code == 535
            code, text = _reply(client, "AUTH PLAIN AGFsaWNlAHdyb25n")
            assert code == 421
    finally:
        door.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs where the door keeps its database and blobs (root and mount(8) needed)."""
    import os
    import subprocess

    state = tmp_path / "state"
    state.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(state)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs: {mounted.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], check=True)


def _fill(disk: Path, leave: int) -> Path:
    """A file taking all of `disk`'s free space but `leave` bytes."""
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(disk).free - leave))
    return filler


@pytest.mark.parametrize("large", [False, True], ids=["held-in-the-database", "spooled"])
def test_full_disk_answers_452_and_recovers_without_restart(small_disk: Path, large: bool) -> None:
    """Full where the message would go, the database (most mail) or its spool file."""
    door = SmtpDoor(small_disk, [dossier("open")], max_message_size=3 * FLUSH_SIZE)
    raw = _large_mail() if large else _mail() + (b"z" * 70 + b"\r\n") * 1000
    no_room = (452, "4.3.1 Insufficient system storage, try again later")
    try:
        filler = _fill(small_disk, leave=5 * FLUSH_SIZE)  # not room for two of the largest
        with _client(door) as client:
            code, text = client.mail(GOOD)
            assert (code, text.decode()) == no_room
        filler.unlink()
        with _client(door) as client:
            client.mail(GOOD)
            assert client.rcpt("open@docs.office.example")[0] == 250
            filler = _fill(small_disk, leave=0)  # ENOSPC from here on
            code, text = client.data(raw)
            assert (code, text.decode()) == no_room
        assert door.messages() == []
        filler.unlink()
        with _client(door) as client:
            assert client.sendmail(GOOD, ["open@docs.office.example"], raw) == {}
        (message,) = door.messages()
        assert message.raw_sha256 == hashlib.sha256(raw).hexdigest()
        assert [p for p in small_disk.rglob(".tmp-*")] == []  # no half-written blob left
    finally:
        door.stop()
