"""The lines of a message file as the email package splits them, read in chunks.

Lines end at CRLF, CR or LF. A walker reads a part's lines until one that an enclosing
multipart's boundary test says ends the part, and reads bodies in runs of whole lines, since
only a line starting with `--` can be a boundary.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import BinaryIO

CHUNK = 64 * 1024
_LINE_END = re.compile(rb"\r\n|\r|\n")
_DASHES_ONE_BY_ONE = 8


class Lines:
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
        dashes = _dashes_after_line_end(buf, start)
        if dashes >= 0:
            end = dashes
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
        if not piece:
            for test in self.ends:
                if test(line):
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


def _dashes_after_line_end(buf: bytes, start: int) -> int:
    """Where the first `--` that follows a line end after `start` begins, or -1.

    Bodies, base64 above all, hold few dashes or none, so the first few dashes are looked at
    one by one (memchr), far faster than a pattern tried at every byte; past those (a rule of
    dashes, a table) two plain searches for a line end and two dashes keep it linear."""
    at = buf.find(b"-", start + 1)
    for _ in range(_DASHES_ONE_BY_ONE):
        if at < 0:
            return -1
        if buf[at - 1] in b"\r\n" and buf.startswith(b"-", at + 1):
            return at
        at = buf.find(b"-", at + 1)
    if at < 0:
        return -1
    after_lf = buf.find(b"\n--", at - 1)
    after_cr = buf.find(b"\r--", at - 1, after_lf if after_lf >= 0 else len(buf))
    found = after_cr if after_cr >= 0 else after_lf
    return found + 1 if found >= 0 else -1
