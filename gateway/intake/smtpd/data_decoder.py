"""SMTP DATA bytes to message bytes, chunk by chunk, without any I/O (RFC 5321 4.5.2, 2.3.8).

The stock aiosmtpd loop awaits one `readuntil` per line and keeps the whole message in memory;
this decoder takes chunks of any size, cut anywhere, and does the per-byte work with `bytes`
methods that run in C, on the chunk where it lies: positions, not slices or joins. Only the
unfinished last line is kept between chunks (and only it, joined to the next chunk's first
line, is ever copied), so memory is bounded by the chunk size, not the message size, and the
message bytes of a chunk come out as a view of it.

The passes over each byte are few: one search for CRLF-dot (it finds the end and every stuffed
line at once, and where there is none the un-stuffing is skipped) from the first dot on, one
for bare CR or LF, and the line-length check, which looks at one line per 1000 bytes or so.

One DATA yields exactly one message: the end is `CRLF . CRLF` and nothing else, and a bare CR
or bare LF anywhere refuses the message (the SMTP smuggling family of attacks relies on a
receiver and a relay disagreeing about where a message ends). A message that breaks a rule is
still read to its end, so the reply comes at the right point in the conversation and the
session goes on; only the bytes are dropped.
"""

from __future__ import annotations

import enum
import io

END = b"\r\n.\r\n"
# A line that begins with a dot, seen from the end of the line before.
STUFFED = b"\r\n."
# RFC 5321 4.5.3.1.6: a line is at most 1000 octets including its CRLF.
MAX_LINE_CHARS = 998
# Kept from the stream while discarding: enough to find an END split across chunks.
_END_TAIL = len(END) - 1
# Message bytes as they come out: a chunk, a view of one, or (un-stuffed, joined) a copy.
Piece = bytes | memoryview


class DataError(enum.Enum):
    """Why a message was refused.

    The first rule found broken is reported; on the lines decoded at once (a chunk's, or the
    line completed across two chunks) the checks run in this order.
    """

    BARE_NEWLINE = "bare_newline"
    LINE_TOO_LONG = "line_too_long"
    TOO_BIG = "too_big"


class DataDecoder:
    """Feed DATA chunks in; get un-dot-stuffed message bytes out, until the end line."""

    def __init__(self, max_size: int | None, max_line_chars: int = MAX_LINE_CHARS) -> None:
        self.max_size = max_size
        self.max_line_chars = max_line_chars
        self.size = 0
        self.error: DataError | None = None
        self.done = False
        # Bytes not yet decided on; `_carry[0]` begins a line when `_line_start` is true.
        # While decoding it never holds an LF: it is the part of a line a chunk left unfinished.
        self._carry = b""
        self._line_start = True

    def feed(self, chunk: bytes) -> tuple[list[Piece], bytes]:
        """Return the message bytes this chunk completes, in pieces, and the bytes after the
        end, if any. A piece may be a view of `chunk`: it is valid as long as `chunk` is.

        Once `done`, the second value holds what followed the end line (pipelined commands);
        it belongs to the SMTP command reader, not to the message.
        """
        if self.done:
            raise ValueError("DATA already ended")
        if self.error is not None:
            return [], self._skip(self._carry + chunk)
        if not self._carry:
            return self._scan(chunk, 0)
        # The unfinished line is completed by the chunk's first line: only that is joined.
        newline = chunk.find(b"\n") + 1
        first = self._carry + chunk[:newline] if newline else self._carry + chunk
        self._carry = b""
        pieces, rest = self._scan(first, 0)
        if not newline:
            return pieces, rest
        if self.done:
            return pieces, rest + chunk[newline:]
        if self.error is not None:
            return pieces, self._skip(self._carry + chunk[newline:])
        more, rest = self._scan(chunk, newline)
        return pieces + more, rest

    def _scan(self, buf: bytes, start: int) -> tuple[list[Piece], bytes]:
        """Decode `buf[start:]`, which begins a line when `_line_start` is true."""
        if self._line_start and buf.startswith(b".\r\n", start):
            return self._finish(buf, start, start, start + 3, stuffed=False)
        # Every END and every stuffed line holds CRLF + dot: one search rules out both. It
        # starts at the first dot, found by memchr, which is ~40 times as fast: base64 (most
        # of a large message) has no dot at all.
        dot = buf.find(b".", start)
        dotted = buf.find(STUFFED, max(start, dot - 2)) if dot >= 0 else -1
        found = buf.find(END, dotted) if dotted >= 0 else -1
        leading_dot = self._line_start and buf.startswith(b".", start)
        if found >= 0:
            stuffed = dotted < found or leading_dot
            return self._finish(buf, start, found + 2, found + len(END), stuffed)
        # A CR at the very end stays unfinished: the next chunk may bring its LF.
        cut = buf.rfind(b"\n", start) + 1
        pieces: list[Piece] = []
        if cut:
            pieces = self._decode(buf, start, cut, stuffed=dotted >= 0 or leading_dot)
            self._line_start = buf.endswith(b"\r\n", start, cut)
        else:
            cut = start
        self._carry = buf[cut:]
        if self.error is None and self._partial_line_too_long(self._carry):
            self._fail(DataError.LINE_TOO_LONG)
        if self.error is not None:
            self._keep_tail(self._carry)
        return pieces, b""

    def _finish(
        self, buf: bytes, start: int, content_end: int, data_end: int, stuffed: bool
    ) -> tuple[list[Piece], bytes]:
        pieces = self._decode(buf, start, content_end, stuffed)
        self.done = True
        self._carry = b""
        return pieces, buf[data_end:]

    def _skip(self, buf: bytes) -> bytes:
        """While discarding, look for the end only; return what follows it once found."""
        if self._line_start and buf.startswith(b".\r\n"):
            self.done = True
            return buf[3:]
        found = buf.find(END)
        if found >= 0:
            self.done = True
            self._carry = b""
            return buf[found + len(END) :]
        self._keep_tail(buf)
        return b""

    def _keep_tail(self, buf: bytes) -> None:
        """While discarding, keep only what an END split across chunks needs."""
        if len(buf) <= _END_TAIL:
            self._carry = buf
            return
        self._line_start = buf.endswith(b"\r\n", 0, len(buf) - _END_TAIL)
        self._carry = buf[-_END_TAIL:]

    def _decode(self, buf: bytes, start: int, end: int, stuffed: bool) -> list[Piece]:
        """Check and un-stuff the whole lines `buf[start:end]` (they end with an LF, or there
        are none); `stuffed` is false when none of them can begin with a dot."""
        if self.error is not None or start == end:
            return []
        if _has_bare_newline(buf, start, end):
            return self._fail(DataError.BARE_NEWLINE)
        if not _lines_fit(buf, start, end, self.max_line_chars, stuffed):
            return self._fail(DataError.LINE_TOO_LONG)
        out: Piece
        if stuffed:
            out = buf[start:end].replace(STUFFED, b"\r\n")
            if self._line_start and out.startswith(b"."):
                out = out[1:]
        elif start == 0 and end == len(buf):
            out = buf
        else:
            out = memoryview(buf)[start:end]
        self.size += len(out)
        if self.max_size is not None and self.size > self.max_size:
            return self._fail(DataError.TOO_BIG)
        return [out]

    def _partial_line_too_long(self, partial: bytes) -> bool:
        # A trailing CR may still become the line's CRLF; it does not count as a character.
        chars = len(partial) - (1 if partial.endswith(b"\r") else 0)
        # The dot-stuffing dot is not part of the line either.
        if self._line_start and partial.startswith(b"."):
            chars -= 1
        return chars > self.max_line_chars

    def _fail(self, error: DataError) -> list[Piece]:
        if self.error is None:
            self.error = error
        return []


def _has_bare_newline(buf: bytes, start: int, end: int) -> bool:
    """True when a CR in `buf[start:end]` is not followed by LF, or an LF not preceded by CR.

    `io.IncrementalNewlineDecoder` (the newline bookkeeping of text files) records which kinds
    of line ending it has seen, CRLF, lone CR and lone LF apart, in one pass in C over the
    characters; latin-1 maps each byte to the character of the same number, so decoding is a
    plain copy. Counting CRs, LFs and CRLFs would be three passes, the last a slow one.
    """
    seen = io.IncrementalNewlineDecoder(None, translate=False)
    seen.decode(str(memoryview(buf)[start:end], "latin-1"), final=True)
    return seen.newlines not in (None, "\r\n")


def _lines_fit(buf: bytes, start: int, end: int, max_chars: int, stuffed: bool) -> bool:
    """True when no line in `buf[start:end]` (whole lines) has more than `max_chars` characters.

    From each line start, the window up to the longest allowed line's LF must hold an LF; the
    last LF in it starts the next window, so the loop runs once per ~max_chars bytes, not once
    per line, and what is left shorter than a window holds no line too long. A stuffing dot
    (only where `stuffed` says a line may begin with one) makes the window one byte longer.
    """
    window = max_chars + 2
    while end - start > window:
        extra = 1 if stuffed and buf.startswith(b".", start) else 0
        newline = buf.rfind(b"\n", start, start + window + extra)
        if newline < 0:
            return False
        start = newline + 1
    return True
