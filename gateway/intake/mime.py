"""A raw message into the parts that may be documents, and the headers we record.

Mail from the wild is often broken: nothing here raises on a bad header or a bad transfer
encoding; the worst case is a part with odd bytes, which recognition then calls unrecognised.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser

from gateway.filenames import safe_filename


@dataclass(frozen=True)
class Part:
    filename: str
    media_type: str
    data: bytes


@dataclass(frozen=True)
class Headers:
    header_from: str
    message_id: str
    subject: str


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


def _header(message: Message, name: str) -> str:
    try:
        return str(message.get(name, "")).strip()
    except (ValueError, TypeError, IndexError):
        raw = message.get_all(name, failobj=[])
        return str(raw[0]) if raw else ""


def attachments(message: EmailMessage) -> list[Part]:
    """Every leaf part that carries a file; message bodies are not documents."""
    parts: list[Part] = []
    for part in message.walk():
        if part.is_multipart() or not _is_file(part):
            continue
        media_type = part.get_content_type()
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        parts.append(Part(_filename(part, media_type, len(parts) + 1), media_type, data))
    return parts


def _is_file(part: Message) -> bool:
    if part.get_content_disposition() == "attachment" or _raw_filename(part):
        return True
    return part.get_content_maintype() == "application"


def _raw_filename(part: Message) -> str:
    try:
        return part.get_filename() or ""
    except (ValueError, TypeError, LookupError):
        return ""


def _filename(part: Message, media_type: str, number: int) -> str:
    ext = mimetypes.guess_extension(media_type) or ".bin"
    return safe_filename(_raw_filename(part), fallback=f"attachment-{number}{ext}")
