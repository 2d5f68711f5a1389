"""Mailbox delivery through a real Postfix into Maildirs, and smtp-sink for the relay's faults."""

from __future__ import annotations

import email
import hashlib
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest
import structlog
from integration.delivery_harness import Harness, invoice
from integration.mailservers import Postfix, SmtpSink
from sqlalchemy import update

from gateway.store.models import DeliveryState, DocType, Dossier


def _mailbox(h: Harness, host: str, port: int, name: str = "books", **extra: object) -> None:
    h.integration(
        name,
        "mailbox",
        host=host,
        port=port,
        tls="none",
        from_address="gateway@office.test",
        timeout=10.0,
        **extra,
    )


def _parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _attachment(msg: EmailMessage) -> tuple[str, bytes]:
    (part,) = list(msg.iter_attachments())
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return str(part.get_filename()), payload


def test_each_type_reaches_its_mailbox_with_its_file_and_a_stable_message_id(
    tmp_path: Path, postfix: Postfix
) -> None:
    h = Harness(tmp_path)
    _mailbox(
        h,
        postfix.host,
        postfix.port,
        to_purchase="purchase@books.test",
        to_sales="sales@books.test",
        to_bank="inbox-[accounting_file_id]@books.test",
        to="default@books.test",
        subject="[type] [number] for [dossier]",
    )
    with h.store.session.begin() as session:
        session.execute(update(Dossier).values(accounting_file_id="f42"))
    data = {kind: invoice(f"MAIL-{kind}") for kind in ("p", "s", "b", "o")}
    docs = {
        "p": h.document("books", data["p"], "p.xml", DocType.PURCHASE_INVOICE, {"number": "P-1"}),
        "s": h.document("books", data["s"], "s.xml", DocType.SALES_INVOICE, {"number": "S-1"}),
        "b": h.document("books", data["b"], "b.xml", DocType.BANK_STATEMENT),
        "o": h.document("books", data["o"], "o", DocType.OTHER),
    }
    h.run_until(lambda: h.settled(*docs.values()))
    assert {k: h.delivery(d).state for k, d in docs.items()} == dict.fromkeys(
        docs, DeliveryState.SENT
    )
    boxes = {"p": "purchase", "s": "sales", "b": "inbox-f42", "o": "default"}
    postfix.wait_for(dict.fromkeys(boxes.values(), 1))
    for kind, box in boxes.items():
        (raw,) = postfix.messages(box)
        msg = _parse(raw)
        delivery = h.delivery(docs[kind])
        assert msg["Message-ID"] == f"<gateway.{delivery.id}.{_sha(data[kind])[:16]}@office.test>"
        assert msg["From"] == "gateway@office.test"
        name, payload = _attachment(msg)
        assert payload == data[kind]
        assert name.endswith(".xml")
        assert msg["Message-ID"] in delivery.remote_ref
    assert _parse(postfix.messages("purchase")[0])["Subject"] == "purchase_invoice P-1 for books"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_document_values_cannot_inject_headers(tmp_path: Path, postfix: Postfix) -> None:
    h = Harness(tmp_path)
    _mailbox(h, postfix.host, postfix.port, to="purchase@books.test", subject="Invoice [number]")
    hostile = "INV-1\r\nBcc: postmaster@books.test\r\nX-Evil: yes"
    before = len(postfix.messages("purchase"))
    doc = h.document(
        "books", invoice("INJECT"), "a.xml", DocType.PURCHASE_INVOICE, {"number": hostile}
    )
    h.run_until(lambda: h.settled(doc))
    assert h.delivery(doc).state is DeliveryState.SENT
    postfix.wait_for({"purchase": before + 1})
    msg = _parse(postfix.messages("purchase")[-1])
    assert msg["Subject"] == "Invoice INV-1 Bcc: postmaster@books.test X-Evil: yes"
    assert msg["Bcc"] is None
    assert msg["X-Evil"] is None
    assert postfix.messages("postmaster") == []


def test_a_type_without_an_address_fails_and_says_which_key_to_set(
    tmp_path: Path, postfix: Postfix
) -> None:
    h = Harness(tmp_path)
    _mailbox(h, postfix.host, postfix.port, to_purchase="purchase@books.test")
    doc = h.document("books", invoice("NOADDR"), "s.xml", DocType.SALES_INVOICE)
    h.run_until(lambda: h.settled(doc))
    assert h.status(doc) == (
        "failed",
        "no-destination: no address for sales documents: set to_sales or to",
    )


def test_mailbox_refused_by_postfix_is_rejected_with_its_reply(
    tmp_path: Path, postfix: Postfix
) -> None:
    h = Harness(tmp_path)
    _mailbox(h, postfix.host, postfix.port, to="nobody@books.test")
    doc = h.document("books", invoice("NOBODY"))
    h.run_until(lambda: h.settled(doc))
    status, reason = h.status(doc)
    assert status == "rejected"
    assert reason.startswith("smtp-550: ")
    assert "5.1.1" in reason


@pytest.fixture
def sink(request: pytest.FixtureRequest) -> Iterator[SmtpSink]:
    server = SmtpSink(list(request.param))
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("sink", [["-r", "RCPT"]], indirect=True)
def test_4xx_from_the_relay_is_deferred(tmp_path: Path, sink: SmtpSink) -> None:
    h = Harness(tmp_path)
    _mailbox(h, sink.host, sink.port, to="purchase@books.test")
    doc = h.document("books", invoice("SOFT"))
    h.run_until(lambda: h.delivery(doc).state is DeliveryState.DEFERRED)
    status, reason = h.status(doc)
    assert status == "failed"
    assert reason.startswith("smtp-4")
    assert "retrying at" in reason


@pytest.mark.parametrize("sink", [["-f", "."]], indirect=True)
def test_5xx_after_the_final_dot_is_rejected(tmp_path: Path, sink: SmtpSink) -> None:
    h = Harness(tmp_path)
    _mailbox(h, sink.host, sink.port, to="purchase@books.test")
    doc = h.document("books", invoice("HARD"))
    h.run_until(lambda: h.settled(doc))
    status, reason = h.status(doc)
    assert status == "rejected"
    assert reason.startswith("smtp-5")


def test_hang_up_after_the_final_dot_is_uncertain_and_resent_with_the_same_message_id(
    tmp_path: Path,
) -> None:
    hangup = SmtpSink(["-q", "."])
    hangup.start()
    h = Harness(tmp_path)
    _mailbox(h, hangup.host, hangup.port, to="purchase@books.test")
    try:
        doc = h.document("books", invoice("GAP"))
        h.run_until(lambda: h.delivery(doc).state is DeliveryState.DEFERRED)
        hangup_copies = hangup.received()
    finally:
        hangup.stop()
    delivery = h.delivery(doc)
    assert delivery.last_error_code == "uncertain-after-data"
    assert [e["outcome"] for e in h.events(doc, "delivery_attempt")] == ["uncertain"]

    healthy = SmtpSink([], port=hangup.port)
    healthy.start()
    try:
        with structlog.testing.capture_logs() as logs:
            h.run_until(lambda: h.delivery(doc).state is DeliveryState.SENT)
        copies = [*hangup_copies, *healthy.received()]
    finally:
        healthy.stop()
    assert len(copies) == 2
    assert len({_parse(c)["Message-ID"] for c in copies}) == 1
    warned = [e for e in logs if e["event"] == "possible_duplicate"]
    assert [e["message_id"] for e in warned] == [_parse(copies[0])["Message-ID"]]
    last = h.events(doc, "delivery_attempt")[-1]
    assert (last["outcome"], last["uncertain"]) == ("sent", "yes")


def test_the_pdf_inside_a_ubl_invoice_goes_beside_it_when_asked(
    tmp_path: Path, postfix: Postfix, corpus: Path
) -> None:
    ubl = (corpus / "efff" / "UBLBE_BE0000000196_V01-15000023.xml").read_bytes()
    h = Harness(tmp_path)
    _mailbox(h, postfix.host, postfix.port, to="bank@books.test", attach_pdf=True)
    before = len(postfix.messages("bank"))
    doc = h.document("books", ubl, "15000023.xml", DocType.PURCHASE_INVOICE)
    h.run_until(lambda: h.settled(doc))
    assert h.delivery(doc).state is DeliveryState.SENT
    postfix.wait_for({"bank": before + 1})
    parts = list(_parse(postfix.messages("bank")[-1]).iter_attachments())
    assert [p.get_filename() for p in parts] == ["15000023.xml", "15000023.pdf"]
    assert parts[0].get_payload(decode=True) == ubl
    pdf = parts[1].get_payload(decode=True)
    assert isinstance(pdf, bytes) and pdf.startswith(b"%PDF-")
    assert len(pdf) == 183694


def test_a_relay_without_starttls_is_refused_when_tls_is_required(
    tmp_path: Path, postfix: Postfix
) -> None:
    h = Harness(tmp_path)
    h.integration(
        "tls",
        "mailbox",
        host=postfix.host,
        port=postfix.port,
        from_address="gateway@office.test",
        to="purchase@books.test",
    )
    before = len(postfix.messages("purchase"))
    doc = h.document("tls", invoice("NO-TLS"))
    h.run_until(lambda: h.settled(doc))
    status, reason = h.status(doc)
    assert status == "failed"
    assert reason.startswith("tls-unavailable: ")
    assert "does not offer STARTTLS" in reason
    assert len(postfix.messages("purchase")) == before
