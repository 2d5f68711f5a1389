"""A message on its way in: a temporary file beside the blob store, hashed while it is written.

Nothing here touches the disk on the event loop: bytes are gathered in memory up to
`FLUSH_SIZE`, then `flush` (creating the file the first time, hashing, writing) and `finish`
(the rest, then fsync) run in the `DURABLE_IO` threads. On a busy disk even creating a file can
take milliseconds, which on the loop would stall every session at once. Memory per message is
bounded by `FLUSH_SIZE`, whatever the message size. The spool directory is inside the blob
store's root, so adopting the file as a blob is a rename on the same file system, never a copy.

A message below `FLUSH_SIZE` touches the disk only once it is finished, in a single thread hop
that the SMTP door also uses to adopt it; one it refuses never reaches the disk at all. Its
header block (`head`) is kept as it goes by, so the checks need not read the file back.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# fsync is waiting, not computing: many at once let the file system fold them into one journal
# commit, which is how fifty sessions cost little more than one. In asyncio's default executor
# (a handful of threads) they would queue behind each other and behind database look-ups.
DURABLE_IO = ThreadPoolExecutor(max_workers=64, thread_name_prefix="durable-io")
FLUSH_SIZE = 256 * 1024
# A header block longer than this is read no further: the rest is body for our purposes.
HEAD_LIMIT = 256 * 1024
END_OF_HEAD = b"\r\n\r\n"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_TOKEN = secrets.token_hex(4)
_SERIAL = itertools.count()


@dataclass(frozen=True)
class Spooled:
    """A complete message on disk, fsync'd, named by nothing yet but its temporary path."""

    path: Path
    sha256: str
    size: int


class SpoolFile:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path: Path | None = None
        self.size = 0
        self._fd: int | None = None
        self._hash = hashlib.sha256()
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._finished = False
        self._head = bytearray()
        self._head_done = False

    @property
    def needs_flush(self) -> bool:
        return self._pending_size >= FLUSH_SIZE

    @property
    def on_disk(self) -> bool:
        """True while a file exists that `discard` would have to remove (blocking)."""
        return self.path is not None and not self._finished

    @property
    def head(self) -> bytes:
        """The header block so far: up to and including the first empty line, at most
        HEAD_LIMIT bytes; what `accept.read_head` would read back from the finished file."""
        return bytes(self._head)

    def write(self, data: bytes) -> None:
        """Take `data` (in memory, no I/O); call `flush` from a thread when `needs_flush`."""
        if self._finished:
            raise ValueError("spool file already finished")
        if not self._head_done:
            self._keep_head(data)
        self._pending.append(data)
        self._pending_size += len(data)
        self.size += len(data)

    def _keep_head(self, data: bytes) -> None:
        """Add to `head` what of `data` belongs to it, copying no more than that."""
        room = HEAD_LIMIT - len(self._head)
        # The empty line may straddle two writes: the last three bytes kept, then `data`.
        tail = bytes(self._head[1 - len(END_OF_HEAD) :])
        seam = (tail + data[: len(END_OF_HEAD) - 1]).find(END_OF_HEAD)
        if seam >= 0:
            end = seam + len(END_OF_HEAD) - len(tail)
        else:
            found = data.find(END_OF_HEAD, 0, room)
            end = found + len(END_OF_HEAD) if found >= 0 else -1
        if 0 <= end <= room:
            self._head += data[:end]
            self._head_done = True
        else:
            self._head += data[:room]
            self._head_done = len(self._head) >= HEAD_LIMIT

    def flush(self) -> None:
        """Hash and write what is pending; blocking, so call it from a thread."""
        if self._fd is None:
            self._fd, self.path = _create(self.directory)
        for data in self._pending:
            self._hash.update(data)
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        self._pending.clear()
        self._pending_size = 0

    def read_back(self) -> bytes:
        """The whole message so far, written out first if need be; blocking (a thread)."""
        self.flush()
        assert self.path is not None
        return self.path.read_bytes()

    def finish(self) -> Spooled:
        """Write the rest, make it durable and close; blocking (fsync), call it from a thread.

        From here on the file belongs to whoever takes the `Spooled`: they adopt or remove it.
        """
        self.flush()
        assert self._fd is not None and self.path is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        self._finished = True
        return Spooled(self.path, self._hash.hexdigest(), self.size)

    def discard(self) -> None:
        """Drop a message that will not be accepted (a no-op once finished); blocking."""
        self._pending.clear()
        if self._finished:
            return
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def _create(directory: Path) -> tuple[int, Path]:
    """A new file of our own in `directory`: named by the process, a token drawn once and a
    counter, so no random name is drawn per file as `mkstemp` does; `O_EXCL` proves it new."""
    while True:
        path = directory / f"in-{os.getpid()}-{_TOKEN}-{next(_SERIAL)}"
        try:
            return os.open(path, _CREATE, 0o600), path
        except FileExistsError:
            continue
        except FileNotFoundError:
            directory.mkdir(parents=True, exist_ok=True)


def sweep(directory: Path, older_than: float) -> int:
    """Remove spool files no session can still be writing; return how many went.

    A crash leaves the files of messages that were never answered `250` (their senders try
    again). A live session writes at least every SMTP timeout, so a file untouched for longer
    than `older_than` (give it twice the timeout) is an orphan, even with another gateway
    instance sharing the blob store.
    """
    if not directory.is_dir():
        return 0
    cutoff = time.time() - older_than
    removed = 0
    for path in directory.glob("in-*"):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed
