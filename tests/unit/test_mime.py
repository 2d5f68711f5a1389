"""MIME to documents: what is a document, what is not (and why), and the limits that send a
hostile message to quarantine instead of taking the daemon down."""

from __future__ import annotations

import base64
import io
import zipfile
from dataclasses import replace
from email.message import EmailMessage
from email.policy import SMTP

import pytest

from gateway import mime
from gateway.config import MimeSettings

LIMITS = MimeSettings()
PDF = b"%PDF-1.4\n" + b"x" * 2000 + b"\n%%EOF\n"
BIG_PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * (LIMITS.small_image_bytes + 10)
LOGO = b"\x89PNG\r\n\x1a\n" + b"\0" * 500


def _mail(body: str = "see attached") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "client@example.com"
    msg["To"] = "acme@docs.office.example"
    msg["Subject"] = "invoices"
    msg["Message-ID"] = "<1@example.com>"
    msg.set_content(body)
    return msg


def _extract(msg: EmailMessage, limits: MimeSettings = LIMITS) -> mime.Extraction:
    return mime.extract(msg.as_bytes(policy=SMTP), limits)


def _names(found: mime.Extraction) -> list[str]:
    return [p.filename for p in found.parts]


def _zip(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_attachment_becomes_document_and_body_does_not() -> None:
    msg = _mail()
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="inv.pdf")
    found = _extract(msg)
    assert found.parts == [mime.Part("inv.pdf", "application/pdf", PDF)]
    assert [s.why for s in found.skipped] == ["message body"]


def test_inline_pdf_from_apple_mail_is_a_document() -> None:
    msg = _mail()
    msg.add_attachment(
        PDF, maintype="application", subtype="pdf", filename="scan.pdf", disposition="inline"
    )
    assert _names(_extract(msg)) == ["scan.pdf"]


def test_nameless_pdf_gets_a_generated_name() -> None:
    msg = _mail()
    msg.add_attachment(PDF, maintype="application", subtype="pdf")
    assert _names(_extract(msg)) == ["attachment-2.pdf"]


def test_attached_messages_are_entered_recursively() -> None:
    inner = _mail("inner")
    inner.add_attachment(PDF, maintype="application", subtype="pdf", filename="deep.pdf")
    middle = _mail("middle")
    middle.add_attachment(inner)
    outer = _mail("outer")
    outer.add_attachment(middle)
    outer.add_attachment(PDF, maintype="application", subtype="pdf", filename="top.pdf")
    assert _names(_extract(outer)) == ["deep.pdf", "top.pdf"]


def test_eml_sent_as_octet_stream_is_entered() -> None:
    inner = _mail("inner")
    inner.add_attachment(PDF, maintype="application", subtype="pdf", filename="in-eml.pdf")
    outer = _mail()
    outer.add_attachment(
        inner.as_bytes(policy=SMTP),
        maintype="application",
        subtype="octet-stream",
        filename="forwarded.eml",
    )
    assert _names(_extract(outer)) == ["in-eml.pdf"]


def test_cid_images_and_small_images_are_not_documents_but_photos_are() -> None:
    msg = _mail()
    msg.add_alternative('<p>Hi</p><img src="cid:logo@x">', subtype="html")
    html = msg.get_payload()[1]
    html.add_related(BIG_PNG, maintype="image", subtype="png", cid="<logo@x>")
    msg.add_attachment(LOGO, maintype="image", subtype="png", filename="signature.png")
    msg.add_attachment(BIG_PNG, maintype="image", subtype="png", filename="receipt.png")
    found = _extract(msg)
    assert _names(found) == ["receipt.png"]
    whys = {s.why for s in found.skipped}
    assert "image shown in the HTML body" in whys
    assert any(w.startswith("image smaller than") for w in whys)


def test_signatures_and_reports_are_not_documents() -> None:
    msg = _mail()
    msg.add_attachment(
        b"sig", maintype="application", subtype="pkcs7-signature", filename="smime.p7s"
    )
    assert _names(_extract(msg)) == []


@pytest.mark.parametrize(
    ("header_value", "expected"),
    [
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ("attachment; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd", "passwd"),
        ("attachment; filename*0*=UTF-8''..%2F; filename*1*=x.pdf", "x.pdf"),
        ('attachment; filename="=?UTF-8?B?ZmFjdHV1ci5wZGY=?="', "factuur.pdf"),
        ("attachment; filename*=UTF-8''invoice%E2%80%AEfdp.exe", "invoicefdp.exe"),
        ('attachment; filename="CON.pdf"', "_CON.pdf"),
        ('attachment; filename="a%00b.pdf"', "a%00b.pdf"),
        ("attachment; filename*=UTF-8''a%00b%0D%0Ac.pdf", "a_b c.pdf"),
        ('attachment; filename=".."', "attachment-2.pdf"),
    ],
)
def test_hostile_file_names_are_decoded_then_made_safe(header_value: str, expected: str) -> None:
    raw = (
        b'From: a@example.com\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: "
        + header_value.encode()
        + b"\r\n\r\n"
        + base64.b64encode(PDF)
        + b"\r\n--b--\r\n"
    )
    assert _names(mime.extract(raw, LIMITS)) == [expected]


def test_zip_entries_become_documents_and_junk_entries_do_not() -> None:
    data = _zip(
        {
            "invoices/a.pdf": PDF,
            "b.xml": b"<Invoice/>",
            "__MACOSX/invoices/._a.pdf": b"fork",
            "invoices/": b"",
        }
    )
    msg = _mail()
    msg.add_attachment(data, maintype="application", subtype="zip", filename="batch.zip")
    found = _extract(msg)
    assert [(p.filename, p.media_type, p.data) for p in found.parts] == [
        ("a.pdf", "application/pdf", PDF),
        ("b.xml", "application/xml", b"<Invoice/>"),
    ]
    assert "macOS resource fork" in {s.why for s in found.skipped}


def test_nested_zip_within_depth_is_unpacked_and_beyond_is_quarantined() -> None:
    inner = _zip({"deep.pdf": PDF})
    two = _zip({"inner.zip": inner})
    msg = _mail()
    msg.add_attachment(two, maintype="application", subtype="zip", filename="outer.zip")
    assert _names(_extract(msg)) == ["deep.pdf"]
    with pytest.raises(mime.Quarantine, match="nested deeper than 0"):
        _extract(msg, replace(LIMITS, zip_max_depth=0))


def test_zip_bomb_by_ratio_is_quarantined() -> None:
    bomb = _zip({"zeros.pdf": b"\0" * (8 * 1024 * 1024)})
    assert len(bomb) < 100_000
    msg = _mail()
    msg.add_attachment(bomb, maintype="application", subtype="zip", filename="bomb.zip")
    with pytest.raises(mime.Quarantine, match="expands more than 100 times"):
        _extract(msg)


def test_zip_total_and_entry_limits_quarantine() -> None:
    data = _zip({f"{i}.pdf": PDF for i in range(20)}, method=zipfile.ZIP_STORED)
    msg = _mail()
    msg.add_attachment(data, maintype="application", subtype="zip", filename="many.zip")
    with pytest.raises(mime.Quarantine, match="more than 10 entries"):
        _extract(msg, replace(LIMITS, zip_max_entries=10))
    with pytest.raises(mime.Quarantine, match="expand past 10000 bytes"):
        _extract(msg, replace(LIMITS, zip_max_total=10_000))


@pytest.mark.parametrize("entry", ["../../etc/cron.d/x", "/etc/passwd", "C:\\x.pdf", "a/../../b"])
def test_zip_slip_names_quarantine_the_message(entry: str) -> None:
    msg = _mail()
    data = _zip({entry: PDF})
    msg.add_attachment(data, maintype="application", subtype="zip", filename="slip.zip")
    with pytest.raises(mime.Quarantine, match="leaves the archive"):
        _extract(msg)


def test_unreadable_or_encrypted_zip_is_kept_whole() -> None:
    msg = _mail()
    msg.add_attachment(b"PK\x03\x04broken", maintype="application", subtype="zip", filename="x.zip")
    encrypted = bytearray(_zip({"secret.pdf": PDF}))
    central = encrypted.index(b"PK\x01\x02")
    encrypted[6] |= 0x1  # "encrypted" in the local header and in the central directory
    encrypted[central + 8] |= 0x1
    msg.add_attachment(bytes(encrypted), maintype="application", subtype="zip", filename="enc.zip")
    assert _names(_extract(msg)) == ["x.zip", "enc.zip"]


def test_part_count_limit_quarantines() -> None:
    msg = _mail()
    for i in range(12):
        msg.add_attachment(PDF, maintype="application", subtype="pdf", filename=f"{i}.pdf")
    assert len(_extract(msg).parts) == 12
    with pytest.raises(mime.Quarantine, match="more than 10 MIME parts"):
        _extract(msg, replace(LIMITS, max_parts=10))


def _nested(levels: int) -> bytes:
    head = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: deep\r\n"
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(levels)
    )
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(levels)))
    return head + opening + b"Content-Type: text/plain\r\n\r\nhi" + closing


def test_deep_nesting_is_quarantined_not_a_crash() -> None:
    assert mime.extract(_nested(5), LIMITS).parts == []
    with pytest.raises(mime.Quarantine, match="nested deeper than 20"):
        mime.extract(_nested(40), LIMITS)
    with pytest.raises(mime.Quarantine, match="nested"):
        mime.extract(_nested(5000), LIMITS)


def test_header_size_limit_quarantines() -> None:
    raw = b"From: a@example.com\r\n" + b"X-Junk: " + b"a" * 200_000 + b"\r\n\r\nbody"
    with pytest.raises(mime.Quarantine, match="header larger than 102400 bytes"):
        mime.extract(raw, LIMITS)


def test_not_a_mail_at_all_has_no_documents() -> None:
    found = mime.extract(b"just one line of text", LIMITS)
    assert found.parts == []
