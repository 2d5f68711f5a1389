"""A message on its way in: a temporary file beside the blob store, hashed while it is written.

Nothing here touches the disk on the event loop: bytes are gathered in memory up to
`FLUSH_SIZE`, then `flush` (creating the file the first time, hashing, writing) and `finish`
(the rest, then fsync) run in the `DURABLE_IO` threads. On a busy disk even creating a file can
take milliseconds, which on the loop would stall every session at once. Memory per message is
bounded by `FLUSH_SIZE`, whatever the message size. The spool directory is inside the blob
store's root, so adopting the file as a blob is a rename on the same file system, never a copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# fsync is waiting, not computing: many at once let the file system fold them into one journal
# commit, which is how fifty sessions cost little more than one. In asyncio's default executor
# (a handful of threads) they would queue behind each other and behind database look-ups.
DURABLE_IO = ThreadPoolExecutor(max_workers=64, thread_name_prefix="durable-io")
FLUSH_SIZE = 256 * 1024


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

    @property
    def needs_flush(self) -> bool:
        return self._pending_size >= FLUSH_SIZE

    def write(self, data: bytes) -> None:
        """Take `data` (in memory, no I/O); call `flush` from a thread when `needs_flush`."""
        if self._finished:
            raise ValueError("spool file already finished")
        self._pending.append(data)
        self._pending_size += len(data)
        self.size += len(data)

    def flush(self) -> None:
        """Hash and write what is pending; blocking, so call it from a thread."""
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.directory, prefix="in-")
            self._fd, self.path = fd, Path(name)
        for data in self._pending:
            self._hash.update(data)
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        self._pending.clear()
        self._pending_size = 0

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
