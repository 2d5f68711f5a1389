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
read as the email package reads it (`mime_head`). Base64 that is not clean, uuencode and over-long
quoted-printable lines are rare: their raw body is read back from the file and decoded by the
email package, so even the odd cases decode exactly as before.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import BinaryIO, Protocol

from gateway.config import MimeSettings
from gateway.intake.mime_head import parse_head

CHUNK = 64 * 1024
_LINE_END = re.compile(rb"\r\n|\r|\n")
_LINE_END_AT_END = re.compile(rb"(\r\n|\r|\n)\Z")
_DASHES_AFTER_LINE_END = re.compile(rb"(?:\r\n|\r|\n)--")
_HEADER_LINE = re.compile(rb"(From |[\041-\071\073-\176]*:|[\t ])")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_DECODE_AT = 64 * 1024
_MAX_QP_LINE = 1024 * 1024
_WHITESPACE = b" \t\n\r\x0b\x0c"


class LimitExceeded(Exception):
    """A MIME limit was passed; `str()` is the reason the message is quarantined with."""


class Sink(Protocol):
    """Where a leaf's decoded bytes go."""

    def write(self, data: bytes) -> None: ...
    def reset(self) -> None: ...


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
        self._node(_Lines(fh), depth, default="text/plain", in_multipart=False)

    def _count(self, depth: int) -> None:
        self.nodes += 1
        if self.nodes > self.limits.max_parts:
            raise LimitExceeded(f"more than {self.limits.max_parts} MIME parts")
        if depth > self.limits.max_depth:
            raise LimitExceeded(f"MIME parts nested deeper than {self.limits.max_depth}")

    def _node(self, lines: _Lines, depth: int, default: str, in_multipart: bool) -> None:
        self._count(depth)
        head = _headers(lines)
        head.set_default_type(default)
        self._content(lines, head, depth, in_multipart)

    def _content(self, lines: _Lines, head: Message, depth: int, in_multipart: bool) -> None:
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
        self, lines: _Lines, head: Message, depth: int, decode: Callable[[Leaf], None]
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
                self._node(_Lines(reader), depth + 1, "text/plain", in_multipart=False)

    def _header_blocks(self, lines: _Lines, depth: int, in_multipart: bool) -> None:
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

    def _multipart(self, lines: _Lines, head: Message, depth: int) -> None:
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


def _headers(lines: _Lines) -> Message:
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


class _Decoder(Protocol):
    def feed(self, data: bytes) -> bool: ...
    def close(self) -> bool: ...


def _decode_body(lines: _Lines, leaf: Leaf, strip: bool) -> None:
    """Stream the body into the leaf's sink; an irregular encoding is redone by the email
    package from the raw bytes, read back from the file."""
    start = lines.tell()
    decoder = _decoder(leaf)
    regular = decoder is not None
    held: bytes | None = None
    while (line := lines.run() or lines.readline()) is not None:
        if held is not None and regular:
            regular = decoder.feed(held) if decoder else False
        held = line
    if held is not None and regular and decoder is not None:
        regular = decoder.feed(_LINE_END_AT_END.sub(b"", held) if strip else held)
    if regular and decoder is not None and decoder.close():
        return
    leaf.sink.reset()
    _fallback(lines, leaf, start, lines.tell(), strip)


def _read_back(lines: _Lines, start: int, stop: int, strip: bool) -> Callable[[Leaf], None]:
    return lambda leaf: _fallback(lines, leaf, start, stop, strip)


def _fallback(lines: _Lines, leaf: Leaf, start: int, stop: int, strip: bool) -> None:
    """Decode the raw body at `start:stop` with the email package itself."""
    raw = lines.read_back(start, stop)
    if strip:
        raw = _LINE_END_AT_END.sub(b"", raw)
    leaf.head.set_payload(raw.decode("ascii", "surrogateescape"))
    decoded = leaf.head.get_payload(decode=True)
    leaf.head.set_payload("")
    leaf.sink.write(decoded if isinstance(decoded, bytes) else b"")


def _decoder(leaf: Leaf) -> _Decoder | None:
    encoding = str(leaf.head.get("content-transfer-encoding", "")).lower()
    if encoding == "base64":
        return _Base64(leaf.sink)
    if encoding == "quoted-printable":
        return _QuotedPrintable(leaf.sink)
    if encoding in ("x-uuencode", "uuencode", "uue", "x-uue"):
        return None
    return _Identity(leaf.sink)


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
        odd = _NOT_BASE64.search(text)
        if odd is not None:
            tail = text[odd.start() :]
            if tail.strip(b"=") or len(tail) > 2:
                return False
            self.padding = len(tail)
            text = text[: odd.start()]
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


class _Lines:
    """The lines of a binary file as the email package splits them, with their offsets.

    `push_end` adds a test that makes a line read as the end of input (a boundary of an
    enclosing multipart), as the email package's own reader does. A line longer than CHUNK
    comes in pieces; only its first piece can end a part or a header block.
    """

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.origin = fh.tell()
        self.buf = b""
        self.base = self.origin
        self.i = 0
        self.eof = False
        self.back: list[tuple[bytes, int]] = []
        self.ends: list[Callable[[bytes], bool]] = []
        self.continued = False
        self.last_start = self.origin
        self.anywhere = 0

    def push_end(self, test: Callable[[bytes], bool], dashes: bool = True) -> None:
        """`dashes`: the test only ever matches lines that start with `--` (boundaries)."""
        self.ends.append(test)
        self.anywhere += 0 if dashes else 1

    def pop_end(self, dashes: bool = True) -> None:
        self.ends.pop()
        self.anywhere -= 0 if dashes else 1

    def tell(self) -> int:
        return self.back[-1][1] if self.back else self.base + self.i

    def unread(self, line: bytes) -> None:
        self.back.append((line, self.last_start))

    def run(self) -> bytes:
        """Whole lines up to the next one that starts with `--` (the only lines a boundary can
        be), or b"" when that is the next line, or when `readline` must go one line at a time.
        Bodies are read in such runs: a 20 MB part is then a few hundred runs, not 270,000
        lines."""
        if self.back or self.continued or self.anywhere:
            return b""
        if not self.eof and len(self.buf) - self.i < CHUNK:
            self._fill()
        buf, start = self.buf, self.i
        if buf.startswith(b"--", start):
            return b""
        dashes = _DASHES_AFTER_LINE_END.search(buf, start)
        if dashes is not None:
            end = dashes.end() - 2
        else:
            cr = buf.rfind(b"\r", start)
            usable_cr = cr + 1 if cr >= 0 and (cr + 1 < len(buf) or self.eof) else 0
            end = max(buf.rfind(b"\n", start) + 1, usable_cr)
        if end <= start:
            return b""
        self.i = end
        self.last_start = self.base + start
        return buf[start:end]

    def readline(self) -> bytes | None:
        """The next line, or None at the end of input or at a line an end test matches."""
        if self.back:
            line, self.last_start = self.back.pop()
            piece = False
        else:
            self.last_start = self.base + self.i
            piece = self.continued
            read = self._next()
            if read is None:
                return None
            line = read
        if not piece and any(test(line) for test in self.ends):
            self.back.append((line, self.last_start))
            return None
        return line

    def _next(self) -> bytes | None:
        while True:
            found = _LINE_END.search(self.buf, self.i)
            cut = found is not None and found.group() == b"\r" and found.end() == len(self.buf)
            if found is not None and not (cut and not self.eof):
                line = self.buf[self.i : found.end()]
                self.i = found.end()
                self.continued = False
                return line
            if not self.eof and len(self.buf) - self.i < CHUNK:
                self._fill()
                continue
            # No line end in CHUNK bytes (keep a final CR: it may start a CRLF), or the end.
            end = len(self.buf) - (1 if cut else 0)
            if end <= self.i:
                return None
            line = self.buf[self.i : end]
            self.i = end
            self.continued = not self.eof
            return line

    def _fill(self) -> None:
        more = self.fh.read(CHUNK)
        self.base += self.i
        self.buf = self.buf[self.i :] + more
        self.i = 0
        self.eof = not more

    def read_back(self, start: int, stop: int) -> bytes:
        """The raw bytes from offset `start` to `stop`."""
        where = self.fh.tell()
        self.fh.seek(start)
        raw = self.fh.read(stop - start)
        self.fh.seek(where)
        return raw
