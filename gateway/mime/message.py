"""A message's own header block: parsed by the email package, and the values a message row
records (From, Message-ID, Subject), as every door reads them.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import BinaryIO

_HEADER_END = re.compile(rb"\r\n\r\n|\n\n")
_SCAN = 64 * 1024


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
    return scan_header_size(io.BytesIO(raw), len(raw))


def scan_header_size(fh: BinaryIO, limit: int) -> int:
    """`header_block_size` of a file, read until the answer is known or passes `limit`;
    the file is left where it was."""
    start = fh.tell()
    try:
        return _scan_header_end(fh, limit)
    finally:
        fh.seek(start)


def _scan_header_end(fh: BinaryIO, limit: int) -> int:
    seen = b""
    offset = 0
    while len(seen) + offset <= limit and (chunk := fh.read(_SCAN)):
        seen += chunk
        found = _HEADER_END.search(seen)
        if found is not None:
            return offset + found.start()
        offset += len(seen) - 3
        seen = seen[-3:]
    return offset + len(seen)
