"""Where a leaf part's decoded body goes while the message is walked.

Every body is counted (a skipped part still reports its size). Only a body that may be a
document, or a message sent as a file, is kept: in memory for `mime.extract`, in a staged
blob file for the rules stage. HTML bodies are scanned for `cid:` references as they pass,
so images shown inline can be told from attached photos without holding the HTML.

Bodies are decoded from their transfer encoding as they stream by (`decoder_for`); only the
regular cases are decoded here, anything else goes back to the email package.
"""

from __future__ import annotations

import binascii
import io
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

_CID = re.compile(rb"""cid:([^"'\s>)]+)""", re.IGNORECASE)
# A reference cut by the end of a chunk is carried over; longer than this it is no reference.
_MAX_CID = 4096
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_DECODE_AT = 64 * 1024
_MAX_QP_LINE = 1024 * 1024


class Sink(Protocol):
    """Where a leaf's decoded bytes go."""

    def write(self, data: bytes) -> None: ...
    def reset(self) -> None: ...


class Keeper(Sink, Protocol):
    """Where a body that is kept goes: memory, or a staged blob file."""


class MemoryKeeper:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def reset(self) -> None:
        self.data.clear()

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)


@dataclass
class Body:
    """A leaf's decoded body: its size, what was kept of it, the cids it refers to; and the
    leaf's decoded file name, read once for the several questions asked about it."""

    keeper: Keeper | None
    scan_cids: bool
    name: str = ""
    size: int = 0
    blank: bool = True
    cids: set[str] = field(default_factory=set)
    tail: bytes = b""

    def write(self, data: bytes) -> None:
        self.size += len(data)
        self.blank = self.blank and not data.strip()
        if self.keeper is not None:
            self.keeper.write(data)
        if self.scan_cids:
            self._scan(data)

    def reset(self) -> None:
        self.size, self.blank, self.tail = 0, True, b""
        self.cids.clear()
        if self.keeper is not None:
            self.keeper.reset()

    def _scan(self, data: bytes) -> None:
        text = self.tail + data
        self.tail = text[-4:]
        for found in _CID.finditer(text):
            if found.end() == len(text) and len(text) - found.start() <= _MAX_CID:
                self.tail = text[found.start() :]  # may go on in the next chunk
                break
            self.cids.add(urllib.parse.unquote(found.group(1).decode("ascii", "replace")).lower())

    def finish_scan(self) -> None:
        """The body ended: a reference held back at the end is complete now."""
        if self.scan_cids:
            for found in _CID.finditer(self.tail):
                name = urllib.parse.unquote(found.group(1).decode("ascii", "replace"))
                self.cids.add(name.lower())
            self.tail = b""


class Decoder(Protocol):
    def feed(self, data: bytes) -> bool: ...
    def close(self) -> bool: ...


def decoder_for(encoding: str, sink: Sink) -> Decoder | None:
    """A streaming decoder of the transfer `encoding` (lowercase) into `sink`, or None when
    only the email package decodes it (uuencode)."""
    if encoding == "base64":
        return _Base64(sink)
    if encoding == "quoted-printable":
        return _QuotedPrintable(sink)
    if encoding in ("x-uuencode", "uuencode", "uue", "x-uue"):
        return None
    return _Identity(sink)


class _Identity:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def feed(self, data: bytes) -> bool:
        self.sink.write(data)
        return True

    def close(self) -> bool:
        return True


class _Base64:
    """Clean base64 (the alphabet, then at most two `=` at the very end): what every mailer
    sends. Anything else returns False, and the caller has the email package decode it."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.pending: list[bytes] = []
        self.size = 0
        self.carry = b""
        self.padding = 0

    def feed(self, data: bytes) -> bool:
        text = data.translate(None, b"\r\n")
        if self.padding:  # after the padding, only more padding
            self.padding += len(text)
            return not text.strip(b"=") and self.padding <= 2
        # Checked by deleting the alphabet, far faster than a search: what is left must be
        # the padding at the end (the last piece of a body usually has some).
        if text.translate(None, _BASE64_ALPHABET):
            data = text.rstrip(b"=")
            padding = len(text) - len(data)
            if padding > 2 or data.translate(None, _BASE64_ALPHABET):
                return False
            self.padding = padding
            text = data
        self.pending.append(text)
        self.size += len(text)
        if self.size >= _DECODE_AT:
            self._decode()
        return True

    def _decode(self) -> None:
        data = self.carry + b"".join(self.pending)
        whole = len(data) // 4 * 4
        self.sink.write(binascii.a2b_base64(data[:whole]))
        self.carry = data[whole:]
        self.pending, self.size = [], 0

    def close(self) -> bool:
        self._decode()
        rest = len(self.carry)
        if (rest, self.padding) not in {(0, 0), (2, 0), (2, 1), (2, 2), (3, 0), (3, 1)}:
            return False
        if rest:
            self.sink.write(binascii.a2b_base64(self.carry + b"=" * (4 - rest)))
        return True


class _QuotedPrintable:
    """Decoded a line at a time, which is how the codec reads it (a soft break joins lines
    only by leaving out the line end); a line longer than 1 MiB goes to the email package."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.line = b""

    def feed(self, data: bytes) -> bool:
        self.line += data
        if self.line.endswith(b"\n"):
            self.sink.write(binascii.a2b_qp(self.line))
            self.line = b""
        return len(self.line) <= _MAX_QP_LINE

    def close(self) -> bool:
        self.sink.write(binascii.a2b_qp(self.line))
        return True
