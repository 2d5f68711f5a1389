"""A message on its way in: a temporary file beside the blob store, hashed while it is written.

Nothing here touches the disk on the event loop: bytes are gathered in memory up to
`FLUSH_SIZE`, then `flush` (creating the file the first time, hashing, writing) and `finish`
(the rest, then fsync) run in the `DURABLE_IO` threads. On a busy disk even creating a file can
take milliseconds, which on the loop would stall every session at once. Memory per message is
bounded by `FLUSH_SIZE`, whatever the message size. The spool directory is inside the blob
store's root, so adopting the file as a blob is a rename on the same file system, never a copy.

A message below `FLUSH_SIZE` never touches the disk here: the SMTP door takes its bytes
(`held`) and commits them with its row, as the blob row they stay (`FLUSH_SIZE` is
`blob_rows.ROW_LIMIT`), and one it refuses is simply dropped. Its header block
(`head`) is kept as it goes by, so the checks need not read the message back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from gateway.store.blob_rows import ROW_LIMIT

log = structlog.get_logger(__name__)
T = TypeVar("T")


class DurableIO:
    """Threads for blocking file work (fsync above all), started as they are needed.

    fsync is waiting, not computing: many at once let the file system fold them into one
    journal commit, which is how fifty sessions cost little more than one. In asyncio's default
    executor (a handful of threads) they would queue behind each other and behind database
    look-ups. Lighter than a `ThreadPoolExecutor`, which a message pays for at every hop: a job
    is one queue put, its result one call into the event loop, with no future or semaphore
    between threads.
    """

    def __init__(self, max_threads: int, name: str) -> None:
        self.max_threads = max_threads
        self.name = name
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        # Threads waiting for a job that no submitted job has claimed yet.
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        """Run `job` in one of the threads; it reports its own outcome (an error is logged).

        Each job claims an idle thread or starts one (up to `max_threads`), so jobs never queue
        behind each other while the pool may still grow: their fsyncs must run side by side.
        """
        with self._lock:
            if self._idle:
                self._idle -= 1
                spawn = False
            else:
                spawn = self._threads < self.max_threads
                self._threads += spawn
                number = self._threads
        self._jobs.put(job)
        if spawn:
            name = f"{self.name}-{number}"
            threading.Thread(target=self._work, name=name, daemon=True).start()

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` in one of the threads, its result or error back on the event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            try:
                result = work(*args)
            except BaseException as exc:
                report(loop, _set_exception, future, exc)
            else:
                report(loop, _set_result, future, result)

        self.submit(job)
        return await future

    def _work(self) -> None:
        """Take jobs for ever: the first is the one that started this thread, every next one
        was claimed from the idle count this thread adds to after each job."""
        while True:
            job = self._jobs.get()
            try:
                job()
            except Exception:
                log.exception("durable_io_job_failed")
            with self._lock:
                self._idle += 1


def report(loop: asyncio.AbstractEventLoop, settle: Callable[..., None], *args: Any) -> None:
    """Hand an outcome to the event loop; a loop closed meanwhile has nobody left to tell."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle, *args)


def _set_result(future: asyncio.Future[T], result: T) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


DURABLE_IO = DurableIO(max_threads=64, name="durable-io")
FLUSH_SIZE = ROW_LIMIT
# A header block longer than this is read no further: the rest is body for our purposes.
HEAD_LIMIT = 256 * 1024
END_OF_HEAD = b"\r\n\r\n"
_IOV_MAX = os.sysconf("SC_IOV_MAX")
# Message bytes as the DATA decoder hands them over: bytes, or a view of a received block.
Buffer = bytes | memoryview
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_TOKEN = secrets.token_hex(4)
_SERIAL = itertools.count()


@dataclass(frozen=True)
class Spooled:
    """A complete message on disk, fsync'd, named by nothing yet but its temporary path."""

    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class Held:
    """A complete message that never reached the disk: its bytes, in memory."""

    data: bytes
    sha256: str

    @classmethod
    def of(cls, data: bytes) -> Held:
        return cls(data, hashlib.sha256(data).hexdigest())


class SpoolFile:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path: Path | None = None
        self.size = 0
        self._fd: int | None = None
        self._hash = hashlib.sha256()
        self._pending: list[Buffer] = []
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

    def write(self, data: Buffer) -> None:
        """Take `data` (in memory, no I/O); call `flush` from a thread when `needs_flush`.

        `data` is kept as it is, not copied: a view must stay valid, and bytes unchanged.
        """
        if self._finished:
            raise ValueError("spool file already finished")
        if not self._head_done:
            self._keep_head(bytes(data[: HEAD_LIMIT - len(self._head)]))
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
        _write_all(self._fd, self._pending)
        self._pending.clear()
        self._pending_size = 0

    def held(self) -> Held | None:
        """The whole message and its sha256 when it never reached the disk, which finishes the
        spool; else None, and the message's file is for `finish` to make durable."""
        if self.path is not None:
            return None
        data = b"".join(self._pending)
        self._pending.clear()
        self._finished = True
        return Held.of(data)

    def read_back(self) -> bytes:
        """The whole message so far: from memory when it never reached the disk, else read
        from its file after writing out the rest; blocking (a thread)."""
        if self.path is None:
            return b"".join(self._pending)
        self.flush()
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


def _write_all(fd: int, buffers: list[Buffer]) -> None:
    """Write `buffers` in order with as few system calls as the kernel allows (`writev`, at
    most IOV_MAX buffers a call), with no join to copy them into one first."""
    views = [memoryview(data) for data in buffers]
    first = 0
    while first < len(views):
        written = os.writev(fd, views[first : first + _IOV_MAX])
        while first < len(views) and written >= len(views[first]):
            written -= len(views[first])
            first += 1
        if written:
            views[first] = views[first][written:]


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
