"""Every e-mail in the shared corpus goes through MIME extraction without an exception, and
yields the documents a person reading it would expect: the attachments, not the bodies, logos,
signatures or report parts. A file added to the corpus fails here until it has an expectation.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import mime
from gateway.config import MimeSettings

EXPECTED: dict[str, list[tuple[str, str]]] = {
    # multipart/digest of plain-text messages: bodies only
    "cpython-msg_02.eml": [],
    # nested multipart reusing the outer boundary: text and HTML bodies
    "cpython-msg_15.eml": [],
    # two text attachments with the same name: both kept
    "cpython-msg_44.eml": [("msg.txt", "text/plain"), ("msg.txt", "text/plain")],
    # broken base64 still yields the file (best effort)
    "enmime-malformed-base64-attach.eml": [("some.doc", "application/msword")],
    # raw UTF-8 bytes in the name are decoded
    "enmime-mime-bad-8bit-filename.eml": [("\u7ba1\u7406.doc", "application/msword")],
    "enmime-missing-content-type.eml": [],
    # multipart without boundary: readable only as a body
    "enmime-multipart-wo-boundary.eml": [],
    "flanker-8bitmime.eml": [],
    "flanker-attached-pdf.eml": [("test.pdf", "application/pdf")],
    "flanker-bz2-attachment.eml": [("foo.txt.bz2", "application/octet-stream")],
    "flanker-dashed-boundaries.eml": [],
    # read receipt: report parts are not documents
    "flanker-disposition-notification.eml": [],
    "flanker-encoded-header.eml": [],
    "flanker-mailformed-headers.eml": [],
    # external-body points outside the message: nothing to take
    "flanker-message-external-body.eml": [],
    "flanker-missing-boundaries.eml": [],
    "flanker-missing-final-boundary.eml": [],
    # the corpus file itself carries U+FFFD in the name
    "flanker-outlook-express.eml": [
        ("\ufffd\xbd\ufffd \ufffd\u0131\ufffd\ufffd\u0135\ufffd.txt", "application/octet-stream")
    ],
    "flanker-quoted-printable.eml": [],
    "flanker-russian-attachment-yahoo.eml": [
        (
            "\u041a\u0430\u0440\u0442\u0438\u043d\u043a\u0430 \u0441 \u043e\u0447\u0435\u043d"
            "\u044c, \u043e\u0447\u0435\u043d\u044c \u0434\u043b\u0438\u043d\u043d\u044b"
            "\u043c \u043f\u0440\u0435\u0434\u043b\u0438\u043d\u043d\u044b\u043c \u0438\u043c"
            "\u0435\u043d\u0435\u043c \u043f\u0440\u0435\u0438\u043c\u0435\u043d\u0435\u043c "
            "\u0442\u0430\u043a\u0438\u043c \u0447\u0442\ufffd",
            "image/png",
        )
    ],
    # S/MIME: the signature is not a document; the signed content is declared
    # application/plain, so it is kept (unrecognised) rather than guessed to be a body
    "flanker-signed.eml": [("attachment-1.bin", "application/plain")],
    "flanker_bounce-delayed.eml": [],
    # bounce with the returned message enclosed: no files in it
    "flanker_bounce-office365.eml": [],
    # a named attachment is a document whatever its declared type
    "flanker_spam-broken-ctype.eml": [("facejj.jpg", "text/plain")],
    # three attached 1-2 KB PNG balls: under the image threshold
    "hunnysoft-m0011.eml": [],
    "hunnysoft-m0021.eml": [],
    "hunnysoft-m0024.eml": [("Biodiversite de semaine en semaine.doc", "application/msword")],
    "hunnysoft-m1015.eml": [("HasenundFr\xf6sche.txt", "text/plain")],
    # BinHex is not decoded (no maintained decoder); kept so nothing is lost;
    # the second name is raw Mac Roman, decoded as Latin-1 only where UTF-8 fails
    "hunnysoft-m2011.eml": [
        ("blueball.png", "application/mac-binhex40"),
        ("HasenundFr\ufffdsche.txt", "application/mac-binhex40"),
    ],
    "hunnysoft-m3004.eml": [("HasenundFr\xf6sche.txt", "text/plain")],
    "hunnysoft-m4005.eml": [("test.rtf", "text/rtf")],
    # the whole message is a TNEF winmail.dat: kept whole, not unpacked
    "hunnysoft-m4006.eml": [("winmail.dat", "application/ms-tnef")],
    # multipart/digest: enclosed messages without files
    "hunnysoft-m4007.eml": [],
    "mailman-bad_email.eml": [],
    "mailman-bad_email_2.eml": [],
    "mailman-bad_email_3.eml": [],
    # message/rfc822 two levels deep: the file at the bottom is found
    "mailman-msg_rfc822.eml": [("ATT00055.txt", "text/plain")],
    "mailparser-mail_malformed_2.eml": [],
    "mailparser-mail_malformed_3.eml": [],
    "mailparser-mail_test_3.eml": [("message.txt", "text/plain")],
    "paperless-broken.eml": [],
    "paperless-eml_with_umlaut.eml": [],
    "paperless-simple_text.eml": [],
    # a small inline JPEG (logo size)
    "rubymail-attachment_content_location.eml": [],
    # the PDF inside the attached message
    "rubymail-attachment_message_rfc822.eml": [("broken.pdf", "application/pdf")],
    # the PNG is shown by cid: in the HTML;
    # the attached message is cut off by the outer boundary and has no parts
    "rubymail-attachment_message_rfc822_inline_image.eml": [],
    "rubymail-attachment_nonascii_filename.eml": [("ci\xeble.txt", "text/plain")],
    "rubymail-attachment_only_email.eml": [("blah.gz", "application/x-gzip")],
    "rubymail-attachment_pdf.eml": [("broken.pdf", "application/pdf")],
    "rubymail-attachment_pdf_lf.eml": [("broken.pdf", "application/pdf")],
    # unquoted encoded-word name, decoded
    "rubymail-attachment_with_base64_encoded_name.eml": [("This is a test.pdf", "application/pdf")],
    "rubymail-attachment_with_encoded_name.eml": [
        ("01 Quien Te Dij\ufffdat. Pitbull.mp3", "application/octet-stream")
    ],
    # a 2 KB JPEG: under the image threshold
    "rubymail-attachment_with_quoted_filename.eml": [],
    "rubymail-bad_date_header2.eml": [],
    # the uuencoded attachment is empty
    "rubymail-content_transfer_encoding_x_uuencode.eml": [],
    "rubymail-header_fields_with_empty_values.eml": [],
    # RFC 2231 continuations
    "rubymail-japanese_attachment_long_name.eml": [
        (
            "\u304b\u304d\u304f\u3051\u3053\u304b\u304d\u304f\u3051\u3053\u304b\u304d\u304f\u3051\u3053\u304b\u304d\u304f\u3051\u3053\u304b\u304d\u304f\u3051\u3053.txt",
            "text/plain",
        )
    ],
    "rubymail-missing_body.eml": [],
    "rubymail-multipart_report_multiple_status.eml": [],
    "rubymail-must_supply_encoding.eml": [],
    "rubymail-raw_email_with_illegal_boundary.eml": [],
    "rubymail-raw_email_with_mimepart_without_content_type.eml": [],
    # a truncated small PNG and an S/MIME signature
    "rubymail-raw_email_with_nested_attachment.eml": [],
}


def test_every_corpus_mail_has_an_expectation(corpus: Path) -> None:
    assert sorted(p.name for p in (corpus / "eml").glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_mail_yields_the_expected_documents(corpus: Path, name: str) -> None:
    raw = (corpus / "eml" / name).read_bytes()
    found = mime.extract(raw, MimeSettings())
    assert [(p.filename, p.media_type) for p in found.parts] == EXPECTED[name]
    assert all(p.data for p in found.parts)
