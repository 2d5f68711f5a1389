"""The headers a message row records (From, Message-ID, Subject), read as `mime.headers` reads
them, at a fraction of the cost for the plain values most mail carries.

`mime.headers` asks the e-mail package's header registry, which parses each value with the full
RFC 5322 grammar: about 0.3 ms of CPU per message, in the thread that makes the message durable,
while the event loop waits for the GIL. Most values need none of it: ASCII with no encoded word,
a Message-ID `<left@right>` of dot-atoms, a From that is one plain address, bare, in angle
brackets or after a display name of plain words. For those the registry's answer is the value
itself (or the address with its brackets dropped); any other value sends the whole message to
`mime.headers`, so both always agree (a test compares them on thousands of generated values).
`read` takes the header block's bytes, and parses them only when `message.plain_fields` cannot
split them, or a value is not plain.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.message import EmailMessage
from typing import Any

from gateway.mime import message as registry

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_ADDRESS = rf"{_DOT_ATOM}@{_DOT_ATOM}"
_MESSAGE_ID = re.compile(rf"<{_ADDRESS}>", re.ASCII)
_BARE = re.compile(_ADDRESS, re.ASCII)
_ANGLED = re.compile(rf"<({_ADDRESS})>", re.ASCII)
_NAMED = re.compile(rf"({_ATEXT}+(?: {_ATEXT}+)*) <({_ADDRESS})>", re.ASCII)


def read(raw_head: bytes) -> registry.Headers:
    """`mime.headers(mime.parse(raw_head, headers_only=True))`, without the e-mail package
    when the header block and every value are plain."""
    fields = registry.plain_fields(raw_head)
    found = None if fields is None else _plain(fields)
    if found is None:
        return registry.headers(registry.parse(raw_head, headers_only=True))
    return found


def headers(message: EmailMessage) -> registry.Headers:
    """`mime.headers(message)`, without the header registry when every value is plain."""
    found = _plain(message.raw_items())
    return registry.headers(message) if found is None else found


def _plain(fields: Iterable[tuple[str, Any]]) -> registry.Headers | None:
    """The headers of raw `fields` when every value is plain, else None."""
    values = {"from": "", "message-id": "", "subject": ""}
    found: set[str] = set()
    for name, value in fields:
        key = name.lower()
        if key in values and key not in found:
            found.add(key)
            values[key] = value
    plain = (
        _plain_from(_unfolded(values["from"])),
        _plain_message_id(_unfolded(values["message-id"])),
        _unfolded(values["subject"]),
    )
    if None in plain:
        return None
    header_from, message_id, subject = plain
    assert header_from is not None and message_id is not None and subject is not None
    return registry.Headers(header_from=header_from, message_id=message_id, subject=subject)


def _unfolded(value: str) -> str | None:
    """The value as the registry sees it (line breaks removed), or None when not plain."""
    if not value.isascii() or "=?" in value:
        return None
    return value.replace("\r", "").replace("\n", "").strip()


def _plain_message_id(value: str | None) -> str | None:
    if value is None or (value and not _MESSAGE_ID.fullmatch(value)):
        return None
    return value


def _plain_from(value: str | None) -> str | None:
    if value is None or not value:
        return value
    if angled := _ANGLED.fullmatch(value):
        return angled.group(1)
    if _BARE.fullmatch(value):
        return value
    if named := _NAMED.fullmatch(value):
        return f"{named.group(1)} <{named.group(2)}>"
    return None
