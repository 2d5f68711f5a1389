"""A raw message into the files that are documents, and the headers we record.

Mail from the wild is often broken: nothing here raises on a bad header or a bad transfer
encoding; the worst case is a part with odd bytes, which recognition then calls unrecognised.
What is deliberately not a document (bodies, signatures, logos, report parts) is listed with
the reason, so "where did my attachment go" always has an answer. Only a message past a limit
(parts, nesting, header size, an archive bomb) raises `Quarantine`; it is then kept aside whole.
"""

from __future__ import annotations

import mimetypes
import re
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser

from gateway.config import MimeSettings
from gateway.filenames import safe_filename
from gateway.intake import archive


class Quarantine(Exception):
    """The message is past a limit; `str()` is the reason kept with it."""


@dataclass(frozen=True)
class Part:
    filename: str
    media_type: str
    data: bytes


@dataclass(frozen=True)
class Skipped:
    """A file-like part that is not a document, and why."""

    name: str
    media_type: str
    size: int
    why: str


@dataclass
class Extraction:
    parts: list[Part] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True)
class Headers:
    header_from: str
    message_id: str
    subject: str


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
_CID = re.compile(rb"""cid:([^"'\s>)]+)""", re.IGNORECASE)


def parse(raw: bytes, headers_only: bool = False) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw, headersonly=headers_only)
    assert isinstance(message, EmailMessage)
    return message


def headers(message: EmailMessage) -> Headers:
    return Headers(
        header_from=_header(message, "From"),
        message_id=_header(message, "Message-ID"),
        subject=_header(message, "Subject"),
    )


def header_values(raw: bytes, name: str) -> list[str]:
    """Every raw value of header `name` in the top-level header block."""
    message = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
    return [str(v) for k, v in message.raw_items() if k.lower() == name.lower()]


def _header(message: Message, name: str) -> str:
    try:
        return str(message.get(name, "")).strip()
    except (ValueError, TypeError, IndexError, AttributeError):
        raw = message.get_all(name, failobj=[])
        return str(raw[0]) if raw else ""


def header_block_size(raw: bytes) -> int:
    """Bytes before the first empty line (the whole message when there is none)."""
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    return min(ends) if ends else len(raw)


def extract(raw: bytes, limits: MimeSettings) -> Extraction:
    """The documents in `raw`; raises `Quarantine` past a limit."""
    if header_block_size(raw) > limits.max_header_bytes:
        raise Quarantine(f"header larger than {limits.max_header_bytes} bytes")
    try:
        message = parse(raw)
        leaves = list(_leaves(message, limits))
    except RecursionError:
        raise Quarantine("MIME structure nested too deep to parse") from None
    cids = _referenced_cids(leaves)
    result = Extraction()
    budget = archive.Budget(limits.zip_max_total)
    for number, part in enumerate(leaves, start=1):
        _classify(part, number, cids, limits, budget, result)
    return result


def _leaves(message: Message, limits: MimeSettings) -> Iterator[Message]:
    """Leaf parts in order, entering multiparts and attached messages; iterative, so depth
    is bounded by `max_depth`, never by Python's stack."""
    stack: list[tuple[Message, int]] = [(message, 0)]
    seen = 0
    while stack:
        part, depth = stack.pop()
        seen += 1
        if seen > limits.max_parts:
            raise Quarantine(f"more than {limits.max_parts} MIME parts")
        if depth > limits.max_depth:
            raise Quarantine(f"MIME parts nested deeper than {limits.max_depth}")
        children = _children(part)
        if children is None:
            yield part
        else:
            stack.extend((child, depth + 1) for child in reversed(children))


def _children(part: Message) -> list[Message] | None:
    payload = part.get_payload()
    if part.is_multipart() and isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    if _is_attached_message(part):
        data = part.get_payload(decode=True)
        return [parse(data)] if isinstance(data, bytes) and data.strip() else []
    return None


def _is_attached_message(part: Message) -> bool:
    """message/rfc822 that Python left unparsed (encoded), or a `.eml` sent as a file."""
    if part.get_content_type() == "message/rfc822":
        return True
    return _decoded_filename(part).lower().endswith(".eml")


def _referenced_cids(leaves: list[Message]) -> set[str]:
    found: set[str] = set()
    for part in leaves:
        if part.get_content_type() != "text/html":
            continue
        data = part.get_payload(decode=True)
        if isinstance(data, bytes):
            found.update(
                urllib.parse.unquote(m.decode("ascii", "replace")).lower()
                for m in _CID.findall(data)
            )
    return found


def _content_id(part: Message) -> str:
    value = str(part.get("Content-ID", "") or "").strip()
    return value.removeprefix("<").removesuffix(">").strip().lower()


def _classify(
    part: Message,
    number: int,
    cids: set[str],
    limits: MimeSettings,
    budget: archive.Budget,
    result: Extraction,
) -> None:
    media_type = part.get_content_type()
    raw_name = _decoded_filename(part)
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    name = safe_filename(raw_name, fallback=_fallback_name(media_type, number))

    def skip(what: str, why: str) -> None:
        result.skipped.append(Skipped(what, media_type, len(data), why))

    why = _not_a_document(part, media_type, raw_name, len(data), cids, limits)
    if why:
        skip(name, why)
        return
    if archive.is_archive(name, media_type):
        try:
            entries = archive.unpack(data, name, limits, budget, _skip_entry(result))
        except archive.ArchiveRefused as exc:
            raise Quarantine(str(exc)) from None
        except archive.Unreadable:
            entries = None
        if entries is not None:
            result.parts.extend(
                Part(safe_filename(e.name, fallback=f"{name}-entry"), e.media_type, e.data)
                for e in entries
            )
            return
    result.parts.append(Part(name, media_type, data))


def _skip_entry(result: Extraction) -> Callable[[str, str], None]:
    def skip(name: str, why: str) -> None:
        result.skipped.append(Skipped(name, "application/octet-stream", 0, why))

    return skip


def _not_a_document(
    part: Message, media_type: str, name: str, size: int, cids: set[str], limits: MimeSettings
) -> str:
    """Why this leaf is not a document, or "" when it is one."""
    disposition = part.get_content_disposition()
    if media_type in NOT_DOCUMENTS:
        return NOT_DOCUMENTS[media_type]
    if part.get_content_maintype() in ("multipart", "message"):
        return "multipart without readable parts"
    if media_type in BODY_TYPES and not name and disposition != "attachment":
        return "message body"
    if size == 0:
        return "empty part"
    if part.get_content_maintype() == "image":
        cid = _content_id(part)
        if cid and cid in cids:
            return "image shown in the HTML body"
        if size < limits.small_image_bytes:
            return f"image smaller than {limits.small_image_bytes} bytes (logo or signature)"
    return ""


def _decoded_filename(part: Message) -> str:
    """RFC 2231/2047 are decoded by the email package; raw 8-bit names arrive as surrogate
    escapes and are decoded here as UTF-8, else as the part's charset, else Latin-1."""
    try:
        name = part.get_filename() or _encoded_word_name(part)
    except (ValueError, TypeError, LookupError, AttributeError, IndexError, HeaderParseError):
        return ""
    if not any("\udc80" <= c <= "\udcff" for c in name):
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


def _fallback_name(media_type: str, number: int) -> str:
    ext = mimetypes.guess_extension(media_type) or ".bin"
    return f"attachment-{number}{ext}"
