"""Which leaves of a message are documents, and what their files are called.

What is deliberately not a document (bodies, signatures, logos, report parts) is said with the
reason, so "where did my attachment go" always has an answer. Names are decoded as mailers
write them, broken ones included.
"""

from __future__ import annotations

import mimetypes
import re
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import Message

from gateway.config import MimeSettings

BODY_TYPES = frozenset({"text/plain", "text/html", "text/enriched", "text/richtext"})
NOT_DOCUMENTS = {
    "application/pkcs7-signature": "signature",
    "application/x-pkcs7-signature": "signature",
    "application/pgp-signature": "signature",
    "application/pgp-keys": "public key",
    "message/delivery-status": "delivery report",
    "message/disposition-notification": "read receipt",
    "message/external-body": "reference to content outside the message",
    "message/partial": "fragment of a message",
    "text/rfc822-headers": "headers of a returned message",
    "text/calendar": "calendar invitation",
    "text/vcard": "contact card",
    "text/x-vcard": "contact card",
}

_RAW_NAME = re.compile(r"""(?i)\b(?:file)?name\s*=\s*"?(=\?[^"\s;]+\?=)""")


def content_id(part: Message) -> str:
    value = str(part.get("Content-ID", "") or "").strip()
    return value.removeprefix("<").removesuffix(">").strip().lower()


def not_a_document(
    part: Message, media_type: str, name: str, size: int, cids: set[str], limits: MimeSettings
) -> str:
    """Why this leaf is not a document, or "" when it is one."""
    never = never_a_document(part, media_type, name)
    if never:
        return never
    if size == 0:
        return "empty part"
    if part.get_content_maintype() == "image":
        cid = content_id(part)
        if cid and cid in cids:
            return "image shown in the HTML body"
        if size < limits.small_image_bytes:
            return f"image smaller than {limits.small_image_bytes} bytes (logo or signature)"
    return ""


def never_a_document(part: Message, media_type: str, name: str) -> str:
    """Why this leaf cannot be a document whatever its body, or ""."""
    if media_type in NOT_DOCUMENTS:
        return NOT_DOCUMENTS[media_type]
    if part.get_content_maintype() in ("multipart", "message"):
        return "multipart without readable parts"
    if media_type in BODY_TYPES and not name and part.get_content_disposition() != "attachment":
        return "message body"
    return ""


def decoded_filename(part: Message) -> str:
    """RFC 2231/2047 are decoded by the email package; raw 8-bit names arrive as surrogate
    escapes and are decoded here as UTF-8, else as the part's charset, else Latin-1."""
    try:
        name = part.get_filename() or _encoded_word_name(part)
    except (ValueError, TypeError, LookupError, AttributeError, IndexError, HeaderParseError):
        return ""
    if name.isascii() or not any("\udc80" <= c <= "\udcff" for c in name):
        return name
    data = name.encode("utf-8", "surrogateescape")
    for charset in ("utf-8", part.get_content_charset() or "utf-8"):
        try:
            return data.decode(charset)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1")


def _encoded_word_name(part: Message) -> str:
    """`filename==?utf-8?B?...?=` unquoted, which the email package rejects but mailers send."""
    for header in ("Content-Disposition", "Content-Type"):
        found = _RAW_NAME.search(_raw_header(part, header))
        if found:
            return str(make_header(decode_header(found.group(1))))
    return ""


def _raw_header(part: Message, name: str) -> str:
    for key, value in part.raw_items():
        if key.lower() == name.lower():
            return str(value)
    return ""


def fallback_name(media_type: str, number: int) -> str:
    ext = mimetypes.guess_extension(media_type) or ".bin"
    return f"attachment-{number}{ext}"
