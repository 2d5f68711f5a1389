"""Taking a message apart from a file, line by line, decoding each leaf part as it streams by.

The email package's parser holds the whole message, then each part's text, then its decoded
bytes: a 20 MB message costs several times its size in memory. Here a message is read in
small pieces and every leaf's body is decoded straight into a sink (a file being hashed, a
counter), so memory stays flat whatever the size.

What a part *is* must not change with the parser, so this walker follows the email package's
own reading of broken mail: lines end at CRLF, CR or LF; headers end at the first line that is
not one; a boundary line of any enclosing multipart ends a part; the line end before a
boundary belongs to the boundary; message/* parts hold a message; message/delivery-status holds
header blocks; a multipart without its boundary is one flat part. Each part's header block is
read as the email package reads it (`head`). Base64 that is not clean, uuencode and over-long
quoted-printable lines are rare: their raw body is read back from the file and decoded by the
email package, so even the odd cases decode exactly as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import BinaryIO, Protocol

from gateway.config import MimeSettings
from gateway.mime.body import Sink, decoder_for
from gateway.mime.head import parse_head
from gateway.mime.lines import Lines

_HEADER_LINE = re.compile(rb"(From |[\041-\071\073-\176]*:|[\t ])")


class LimitExceeded(Exception):
    """A MIME limit was passed; `str()` is the reason the message is quarantined with."""


@dataclass
class Leaf:
    """A part without subparts: its headers, and the sink its decoded body went to."""

    head: Message
    sink: Sink


class Attached(Protocol):
    """Whether a leaf is a message sent as a file (`.eml`): None when it is not, else a reader
    of its decoded bytes, empty when there is nothing in it to enter."""

    def __call__(self, leaf: Leaf) -> BinaryIO | None: ...


@dataclass
class Walk:
    """Leaves in document order; `open_sink` picks where each leaf's body is decoded to, and
    `attached` says whether a leaf is a message to be entered."""

    limits: MimeSettings
    open_sink: Callable[[Message], Sink]
    attached: Attached
    leaves: list[Leaf] = field(default_factory=list)
    nodes: int = 0

    def message(self, fh: BinaryIO, depth: int = 0) -> None:
        """Walk the message in `fh` (seekable; read from its current position)."""
        self._node(Lines(fh), depth, default="text/plain", in_multipart=False)

    def _count(self, depth: int) -> None:
        self.nodes += 1
        if self.nodes > self.limits.max_parts:
            raise LimitExceeded(f"more than {self.limits.max_parts} MIME parts")
        if depth > self.limits.max_depth:
            raise LimitExceeded(f"MIME parts nested deeper than {self.limits.max_depth}")

    def _node(self, lines: Lines, depth: int, default: str, in_multipart: bool) -> None:
        self._count(depth)
        head = _headers(lines)
        head.set_default_type(default)
        self._content(lines, head, depth, in_multipart)

    def _content(self, lines: Lines, head: Message, depth: int, in_multipart: bool) -> None:
        maintype = head.get_content_maintype()
        if head.get_content_type() == "message/delivery-status":
            self._header_blocks(lines, depth, in_multipart)
        elif maintype == "message":  # its message is the last part made, as a leaf would be
            self._node(lines, depth + 1, "text/plain", in_multipart)
        elif maintype == "multipart" and head.get_boundary() is not None:
            self._multipart(lines, head, depth)
        else:
            strip = in_multipart and maintype != "multipart"
            self._leaf(lines, head, depth, lambda leaf: _decode_body(lines, leaf, strip))

    def _leaf(
        self, lines: Lines, head: Message, depth: int, decode: Callable[[Leaf], None]
    ) -> None:
        leaf = Leaf(head, self.open_sink(head))
        decode(leaf)
        reader = self.attached(leaf)
        if reader is None:
            self.leaves.append(leaf)
            return
        with reader:
            if reader.read(1):
                reader.seek(0)
                self._node(Lines(reader), depth + 1, "text/plain", in_multipart=False)

    def _header_blocks(self, lines: Lines, depth: int, in_multipart: bool) -> None:
        """message/delivery-status: blocks of headers separated by blank lines. Whether a
        block is the last (whose line end goes to a following boundary) is known only after
        it, so a block's few bytes are decoded once it has ended."""
        while True:
            lines.push_end(_blank, dashes=False)
            self._count(depth + 1)
            head = _headers(lines)
            if head.get_content_maintype() in ("multipart", "message"):
                self._content(lines, head, depth + 1, in_multipart=False)
                start = stop = lines.tell()
            else:
                start = lines.tell()
                while lines.readline() is not None:
                    pass
                stop = lines.tell()
            lines.pop_end(dashes=False)
            lines.readline()
            line = lines.readline()
            if line is not None:
                lines.unread(line)
            if start != stop or head.get_content_maintype() not in ("multipart", "message"):
                strip = in_multipart and line is None
                decode = _read_back(lines, start, stop, strip)
                self._leaf(lines, head, depth + 1, decode)
            if line is None:
                return

    def _multipart(self, lines: Lines, head: Message, depth: int) -> None:
        digest = head.get_content_type() == "multipart/digest"
        default = "message/rfc822" if digest else "text/plain"
        boundary = _boundary_matcher(str(head.get_boundary()))
        start = lines.tell()
        preamble = True
        while (line := lines.readline()) is not None:
            closing = boundary(line)
            if closing is None:
                continue  # the preamble
            if closing:
                stop = lines.last_start
                break
            preamble = False
            while (following := lines.readline()) is not None and boundary(following) is not None:
                pass  # boundary lines in a row make no parts
            if following is not None:
                lines.unread(following)
            lines.push_end(lambda text: boundary(text) is not None)
            self._node(lines, depth + 1, default, in_multipart=True)
            lines.pop_end()
        if preamble:  # no start boundary: the email package keeps the text as one payload
            end = stop if line is not None else lines.tell()
            self._leaf(lines, head, depth, _read_back(lines, start, end, strip=False))
            return
        while lines.readline() is not None:
            pass  # the epilogue


def _blank(line: bytes) -> bool:
    return line[:1] in (b"\r", b"\n")


def _boundary_matcher(boundary: str) -> Callable[[bytes], bool | None]:
    """A test of a line: None when it is not a boundary line, else whether it closes the
    multipart. A boundary line is `--boundary`, then `--` when closing, then blanks (spaces
    and tabs) up to the line end: the email package's pattern, matched without a regex
    compiled per message (every multipart has its own boundary)."""
    try:
        separator = ("--" + boundary).encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return lambda line: None

    def test(line: bytes) -> bool | None:
        if not line.startswith(separator):
            return None
        rest = line[len(separator) :].removesuffix(b"\n").removesuffix(b"\r")
        closing = rest.startswith(b"--")
        return None if rest[2 if closing else 0 :].strip(b" \t") else closing

    return test


def _headers(lines: Lines) -> Message:
    """The header block parsed by the email package; the blank line after it is consumed,
    any other line that ends it is left for the body."""
    block = []
    while (line := lines.readline()) is not None:
        if not _HEADER_LINE.match(line):
            if not _blank(line):
                lines.unread(line)
            break
        block.append(line)
    return parse_head(b"".join(block))


def _decode_body(lines: Lines, leaf: Leaf, strip: bool) -> None:
    """Stream the body into the leaf's sink; an irregular encoding is redone by the email
    package from the raw bytes, read back from the file."""
    start = lines.tell()
    encoding = str(leaf.head.get("content-transfer-encoding", "")).lower()
    decoder = decoder_for(encoding, leaf.sink)
    regular = decoder is not None
    held: bytes | None = None
    while (line := lines.run() or lines.readline()) is not None:
        if held is not None and regular:
            regular = decoder.feed(held) if decoder else False
        held = line
    if held is not None and regular and decoder is not None:
        regular = decoder.feed(_without_line_end(held) if strip else held)
    if regular and decoder is not None and decoder.close():
        return
    leaf.sink.reset()
    _fallback(lines, leaf, start, lines.tell(), strip)


def _read_back(lines: Lines, start: int, stop: int, strip: bool) -> Callable[[Leaf], None]:
    return lambda leaf: _fallback(lines, leaf, start, stop, strip)


def _fallback(lines: Lines, leaf: Leaf, start: int, stop: int, strip: bool) -> None:
    """Decode the raw body at `start:stop` with the email package itself."""
    raw = lines.read_back(start, stop)
    if strip:
        raw = _without_line_end(raw)
    leaf.head.set_payload(raw.decode("ascii", "surrogateescape"))
    decoded = leaf.head.get_payload(decode=True)
    leaf.head.set_payload("")
    leaf.sink.write(decoded if isinstance(decoded, bytes) else b"")


def _without_line_end(data: bytes) -> bytes:
    """`data` without the one line end (CRLF, CR or LF) it ends with, if any. Cut from the
    end, not found by a pattern: the data is often a whole body."""
    if data.endswith(b"\r\n"):
        return data[:-2]
    return data[:-1] if data.endswith((b"\r", b"\n")) else data
