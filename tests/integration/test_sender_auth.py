"""The `aligned` policy end to end over SMTP: real SPF (pyspf) and DKIM (dkimpy) lookups against
a DNS stub on loopback; only an SPF or DKIM pass aligned with the From domain lets mail in, and
a DNS failure is a 451, never a pass. Plus the IMAP side: a trusted Authentication-Results."""

from __future__ import annotations

import base64
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import dkim
import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from integration.dns_stub import DnsStub
from integration.smtp_door import SmtpDoor, dossier

from gateway.config import IntakeSettings
from gateway.intake.senders import authentication


@pytest.fixture(scope="module")
def dkim_key() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


@pytest.fixture
def stub(dkim_key: tuple[bytes, str]) -> Iterator[DnsStub]:
    server = DnsStub(
        txt={
            "spf-ok.example": ["v=spf1 ip4:127.0.0.1 -all"],
            "spf-fail.example": ["v=spf1 -all"],
            "sel._domainkey.spf-fail.example": [dkim_key[1]],
            "sel._domainkey.evil.example": [dkim_key[1]],
        },
        servfail={"broken.example"},
    )
    before = dns.resolver.default_resolver
    authentication.use_resolver("127.0.0.1", server.port, timeout=2.0)
    try:
        yield server
    finally:
        dns.resolver.default_resolver = before
        server.stop()


@pytest.fixture
def door(tmp_path: Path, stub: DnsStub) -> Iterator[SmtpDoor]:
    patterns = ["@spf-ok.example", "@spf-fail.example", "@broken.example"]
    server = SmtpDoor(
        tmp_path, [dossier("acme", patterns)], IntakeSettings(sender_policy="aligned")
    )
    try:
        yield server
    finally:
        server.stop()


def _mail(sender: str, sign_as: str = "", key: bytes = b"", length: bool = False) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "acme@docs.office.example"
    msg["Subject"] = "invoice"
    msg.set_content("see attached\n")
    raw = msg.as_bytes(policy=SMTP)
    if sign_as:
        signature = dkim.sign(
            raw, b"sel", sign_as.encode(), key, include_headers=[b"from", b"subject"], length=length
        )
        raw = signature + raw
    return raw


def _send(door: SmtpDoor, sender: str, raw: bytes) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", door.port, timeout=10) as client:
        client.ehlo("client.example")
        client.mail(sender)
        assert client.rcpt("acme@docs.office.example")[0] == 250
        code, text = client.data(raw)
    return code, text.decode()


def test_spf_pass_aligned_with_from_is_accepted(door: SmtpDoor) -> None:
    code, _ = _send(door, "a@spf-ok.example", _mail("a@spf-ok.example"))
    assert code == 250
    [message] = door.messages()
    assert message.auth["spf"] == {"result": "pass", "domain": "spf-ok.example"}


def test_spf_fail_without_dkim_is_refused(door: SmtpDoor) -> None:
    code, text = _send(door, "a@spf-fail.example", _mail("a@spf-fail.example"))
    assert (code, text) == (
        550,
        "5.7.1 dossier acme accepts documents only from its allowed senders: "
        "no SPF or DKIM pass aligned with spf-fail.example",
    )
    assert door.messages() == []


def test_aligned_dkim_pass_is_enough(door: SmtpDoor, dkim_key: tuple[bytes, str]) -> None:
    raw = _mail("a@spf-fail.example", "spf-fail.example", dkim_key[0])
    assert _send(door, "a@spf-fail.example", raw)[0] == 250
    [message] = door.messages()
    assert message.auth["dkim"] == [{"domain": "spf-fail.example", "result": "pass"}]


def test_dkim_from_another_domain_does_not_align(
    door: SmtpDoor, dkim_key: tuple[bytes, str]
) -> None:
    raw = _mail("a@spf-fail.example", "evil.example", dkim_key[0])
    assert _send(door, "a@spf-fail.example", raw)[0] == 550


def test_dkim_with_a_body_length_limit_does_not_count(
    door: SmtpDoor, dkim_key: tuple[bytes, str]
) -> None:
    raw = _mail("a@spf-fail.example", "spf-fail.example", dkim_key[0], length=True)
    raw += b"appended by someone else\r\n"
    assert _send(door, "a@spf-fail.example", raw)[0] == 550


def test_dns_failure_is_a_temporary_refusal(door: SmtpDoor) -> None:
    code, text = _send(door, "a@broken.example", _mail("a@broken.example"))
    assert code == 451
    assert text.startswith("4.7.1 dossier acme accepts documents only from its allowed senders")
    assert door.messages() == []


def test_only_the_trusted_authserv_id_counts() -> None:
    values = [
        "mx.provider.example; dkim=pass header.d=client.example; spf=fail smtp.mailfrom=x@y",
        "gateway.forged; dmarc=pass header.from=evil.example",
    ]
    evidence = authentication.trusted_results(values, "mx.provider.example")
    assert evidence.passed == frozenset({"client.example"})
    assert authentication.trusted_results(values, "gateway.forged").passed == {"evil.example"}
    assert authentication.trusted_results(values, "").passed == frozenset()
    # a forged header below the provider's own is never read
    forged_below = [values[0], "mx.provider.example; dmarc=pass header.from=evil.example"]
    assert (
        "evil.example"
        not in authentication.trusted_results(forged_below, "mx.provider.example").passed
    )
