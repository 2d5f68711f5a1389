"""SMTP DATA bytes to message bytes, chunk by chunk, without any I/O (RFC 5321 4.5.2, 2.3.8).

The stock aiosmtpd loop awaits one `readuntil` per line and keeps the whole message in memory;
this decoder takes chunks of any size, cut anywhere, and does the per-byte work with `bytes`
methods that run in C. It keeps only the unfinished last line between chunks, so memory is
bounded by the chunk size, not the message size.

One DATA yields exactly one message: the end is `CRLF . CRLF` and nothing else, and a bare CR
or bare LF anywhere refuses the message (the SMTP smuggling family of attacks relies on a
receiver and a relay disagreeing about where a message ends). A message that breaks a rule is
still read to its end, so the reply comes at the right point in the conversation and the
session goes on; only the bytes are dropped.
"""

from __future__ import annotations

import enum

END = b"\r\n.\r\n"
# RFC 5321 4.5.3.1.6: a line is at most 1000 octets including its CRLF.
MAX_LINE_CHARS = 998
# Kept from the stream while discarding: enough to find an END split across chunks.
_END_TAIL = len(END) - 1


class DataError(enum.Enum):
    """Why a message was refused.

    The first rule found broken is reported; within one chunk the checks run in this order.
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
        self._carry = b""
        self._line_start = True

    def feed(self, chunk: bytes) -> tuple[bytes, bytes]:
        """Return the message bytes this chunk completes and the bytes after the end, if any.

        Once `done`, the second value holds what followed the end line (pipelined commands);
        it belongs to the SMTP command reader, not to the message.
        """
        if self.done:
            raise ValueError("DATA already ended")
        buf = self._carry + chunk if self._carry else chunk
        if self._line_start and buf.startswith(b".\r\n"):
            return self._finish(buf, 0, 3)
        found = buf.find(END)
        if found >= 0:
            return self._finish(buf, found + 2, found + len(END))
        if self.error is not None:
            self._keep_tail(buf)
            return b"", b""
        last = buf.rfind(b"\r\n")
        cut = last + 2 if last >= 0 else 0
        out = self._decode(buf[:cut]) if cut else b""
        self._carry = buf[cut:]
        if cut:
            self._line_start = True
        if self.error is None and self._partial_line_too_long(self._carry):
            self._fail(DataError.LINE_TOO_LONG)
            self._keep_tail(self._carry)
        return out, b""

    def _finish(self, buf: bytes, content_end: int, data_end: int) -> tuple[bytes, bytes]:
        out = self._decode(buf[:content_end]) if self.error is None else b""
        self.done = True
        self._carry = b""
        return out, buf[data_end:]

    def _keep_tail(self, buf: bytes) -> None:
        """While discarding, keep only what an END split across chunks needs."""
        if len(buf) <= _END_TAIL:
            self._carry = buf
            return
        self._line_start = buf.endswith(b"\r\n", 0, len(buf) - _END_TAIL)
        self._carry = buf[-_END_TAIL:]

    def _decode(self, lines: bytes) -> bytes:
        """Check and un-stuff whole lines (`lines` ends with CRLF, or is empty)."""
        if self.error is not None:
            return b""
        if _has_bare_newline(lines):
            return self._fail(DataError.BARE_NEWLINE)
        if not _lines_fit(lines, self.max_line_chars):
            return self._fail(DataError.LINE_TOO_LONG)
        out = lines.replace(b"\r\n.", b"\r\n")
        if self._line_start and out.startswith(b"."):
            out = out[1:]
        self.size += len(out)
        if self.max_size is not None and self.size > self.max_size:
            return self._fail(DataError.TOO_BIG)
        return out

    def _partial_line_too_long(self, partial: bytes) -> bool:
        # A trailing CR may still become the line's CRLF; it does not count as a character.
        chars = len(partial) - (1 if partial.endswith(b"\r") else 0)
        # The dot-stuffing dot is not part of the line either.
        if self._line_start and partial.startswith(b"."):
            chars -= 1
        return chars > self.max_line_chars

    def _fail(self, error: DataError) -> bytes:
        if self.error is None:
            self.error = error
        return b""


def _has_bare_newline(lines: bytes) -> bool:
    """True when a CR is not followed by LF, or an LF not preceded by CR.

    Every CRLF holds one CR and one LF, so the CRs and LFs together number twice the CRLFs
    exactly when none stands alone: two passes in C (deleting them, counting the pairs).
    """
    ends = len(lines) - len(lines.translate(None, b"\r\n"))
    return ends != 2 * lines.count(b"\r\n")


def _lines_fit(lines: bytes, max_chars: int) -> bool:
    """True when no line in `lines` (whole CRLF lines) has more than `max_chars` characters.

    From each line start, the window up to the longest allowed line's LF must hold an LF; the
    last LF in it starts the next window, so the loop runs once per ~max_chars bytes, not once
    per line. A stuffing dot makes the window one byte longer.
    """
    start, size = 0, len(lines)
    while start < size:
        extra = 1 if lines.startswith(b".", start) else 0
        newline = lines.rfind(b"\n", start, start + max_chars + 2 + extra)
        if newline < 0:
            return False
        start = newline + 1
    return True
