"""A message's own header block: parsed by the email package, and the values a message row
records (From, Message-ID, Subject), as every door reads them.

`plain_fields` splits a plain header block (ASCII, CRLF line ends, every line a field or its
continuation, up to an empty line) into the very (name, value) pairs the e-mail package's
parser would record, without its parser: the SMTP door reads every message's header block, and
the parser (with `policy.default` it also runs Content-Type through the header registry) is
most of what that costs. Any other block is left to the parser.
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
# The start of a line the parser takes as a field: a name of printable ASCII but `:`, then `:`
# (its own pattern also takes an empty name, and `From `, which it reads another way).
_FIELD_NAME = re.compile(r"[\041-\071\073-\176]+:")


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
    fields = plain_fields(raw)
    if fields is None:
        fields = list(parse(raw, headers_only=True).raw_items())
    return [str(v) for k, v in fields if k.lower() == name.lower()]


def plain_fields(raw: bytes) -> list[tuple[str, str]] | None:
    """`parse(raw, headers_only=True).raw_items()` when the header block is plain, else None.

    Plain: it ends at the first empty line (CRLF CRLF), is ASCII, every CR and LF in it is a
    CRLF, and every line is `name:` (no `From ` envelope line) or, after the first, a
    continuation starting with a space or a tab. The values are the parser's own: the rest
    of the field's first line without leading blanks, its continuation lines with their
    CRLFs, trailing CRs and LFs removed.
    """
    end = raw.find(b"\r\n\r\n")
    if end < 0 or not raw[:end].isascii():
        return None
    text = raw[: end + 2].decode("ascii")
    crlf = text.count("\r\n")
    if text.count("\r") != crlf or text.count("\n") != crlf:
        return None
    fields: list[list[str]] = []
    for line in text.split("\r\n")[:-1]:
        if line[:1] in (" ", "\t") and fields:
            fields[-1].append(line + "\r\n")
        elif _FIELD_NAME.match(line):
            fields.append([line + "\r\n"])
        else:
            return None
    return [_field(lines) for lines in fields]


def _field(lines: list[str]) -> tuple[str, str]:
    name, value = lines[0].split(":", 1)
    value = value.lstrip(" \t") + "".join(lines[1:])
    return name, value.rstrip("\r\n")


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
