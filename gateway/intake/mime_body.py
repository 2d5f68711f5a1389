"""Where a leaf part's decoded body goes while the message is walked.

Every body is counted (a skipped part still reports its size). Only a body that may be a
document, or a message sent as a file, is kept: in memory for `mime.extract`, in a staged
blob file for the rules stage. HTML bodies are scanned for `cid:` references as they pass,
so images shown inline can be told from attached photos without holding the HTML.
"""

from __future__ import annotations

import io
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

_CID = re.compile(rb"""cid:([^"'\s>)]+)""", re.IGNORECASE)
# A reference cut by the end of a chunk is carried over; longer than this it is no reference.
_MAX_CID = 4096


class Keeper(Protocol):
    def write(self, data: bytes) -> None: ...
    def reset(self) -> None: ...


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
