"""Content-addressed blobs: a blob's name is its sha256, so writing it twice is harmless.

A blob up to `blob_rows.ROW_LIMIT` is a row in the database, written in the transaction that
commits the rows naming it (`gateway.store.blob_rows`); a larger one is a file here. `get`
reads either. A file is durable before its hash is returned: temporary file, fsync, rename,
fsync of the directory. Callers commit database rows that name a file only after `put` has
returned.

Many blobs at once (the rules stage's batch) are written with `stage`, hashed as they stream
in; the large ones are made durable together by `publish`: every file synced, then renamed in,
then one sync per directory, instead of two syncs per blob one after the other. Rows naming them
are committed only after `publish` has returned. A staged blob may be held in memory until then
(`stage(budget)`): most documents are small, and a file made, closed, opened again to be read
and once more to be synced costs more than the bytes it holds.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from sqlalchemy import Engine

from gateway.store import blob_rows

# Syncs of one batch run side by side, so the file system can share journal commits.
SYNC_THREADS = 4
_SYNCERS = ThreadPoolExecutor(max_workers=SYNC_THREADS, thread_name_prefix="blob-sync")
T = TypeVar("T")
STAGING = ".staging"
_DIGEST = re.compile(r"[0-9a-f]{64}")
# Names of staged files that are not made until `publish`: unique to this process (with its
# pid), and `publish` makes them exclusively, so a clash fails rather than overwrites.
_NAMES = os.urandom(6).hex()
_NUMBERS = itertools.count()


@dataclass(frozen=True)
class Staged:
    """A blob written and hashed but not yet durable nor in place (see `BlobStore.publish`):
    a file at `path`, or, when `data` is set, bytes that `publish` writes to `path`."""

    digest: str
    size: int
    path: Path
    data: bytes | None = None

    def read(self) -> bytes:
        return self.path.read_bytes() if self.data is None else self.data

    def open(self) -> BinaryIO:
        return self.path.open("rb") if self.data is None else io.BytesIO(self.data)

    def discard(self) -> None:
        """Dropped, also when `publish` failed after writing the bytes held in memory."""
        self.path.unlink(missing_ok=True)


@dataclass
class MemoryBudget:
    """How many more bytes staged blobs may hold in memory, together, until `publish`."""

    left: int


class BlobWriter:
    """A blob being written in pieces, hashed as they come: in memory while `budget` allows,
    in a staged file from then on."""

    def __init__(self, directory: Path, budget: MemoryBudget | None = None) -> None:
        self.directory = directory
        self.budget = budget
        self.memory: bytearray | None = None
        self.fh: BinaryIO | None = None
        if budget is None:
            self._spill()
        else:
            self.memory = bytearray()
            self.path = _staged_name(directory)
        self.hash = hashlib.sha256()
        self.size = 0

    def _spill(self) -> None:
        fd, name = tempfile.mkstemp(dir=self.directory, prefix="stage-")
        self.path = Path(name)
        self.fh = os.fdopen(fd, "wb")
        if self.memory is not None:
            self.fh.write(self.memory)
            self._release()
            self.memory = None

    def _release(self) -> None:
        if self.memory is not None and self.budget is not None:
            self.budget.left += len(self.memory)

    def write(self, data: bytes) -> None:
        if self.memory is not None and self.budget is not None:
            if len(data) <= self.budget.left:
                self.budget.left -= len(data)
                self.memory += data
            else:
                self._spill()
        if self.fh is not None:
            self.fh.write(data)
        self.hash.update(data)
        self.size += len(data)

    def reset(self) -> None:
        """Start over: what was written is dropped."""
        if self.fh is not None:
            self.fh.seek(0)
            self.fh.truncate()
        elif self.memory is not None:
            self._release()
            self.memory.clear()
        self.hash = hashlib.sha256()
        self.size = 0

    def finish(self) -> Staged:
        if self.fh is None:
            return Staged(self.hash.hexdigest(), self.size, self.path, bytes(self.memory or b""))
        self.fh.close()
        return Staged(self.hash.hexdigest(), self.size, self.path)


class BlobStore:
    def __init__(self, root: Path, engine: Engine | None = None) -> None:
        self.root = root
        # The database whose `blobs` rows `get` reads first; without one, files only.
        self.engine = engine
        self.staging_made = False

    def path(self, digest: str) -> Path:
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store `data` durably and return its sha256."""
        digest = hashlib.sha256(data).hexdigest()
        final = self.path(digest)
        if final.exists():
            return digest
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
        os.close(fd)
        try:
            write_synced(Path(tmp), data)
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(final.parent)
        return digest

    @property
    def spool_dir(self) -> Path:
        """Where messages are written while they arrive: same file system, so `adopt` renames."""
        return self.root / ".spool"

    def adopt(self, source: Path, digest: str, *, sync: bool = True) -> Path:
        """Make the fsync'd file `source`, whose sha256 is `digest`, the blob `digest`; return
        the blob's directory.

        The caller vouches for the digest (it hashed the bytes while writing them), so a blob
        already there is simply replaced by the same bytes: one rename, no look first. Blocking
        (rename, directory fsync). With `sync=False` the caller syncs the returned directory
        before anything names the blob, once for however many files it adopted there.
        """
        final = self.path(digest)
        try:
            os.replace(source, final)
        except FileNotFoundError:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, final)
        if sync:
            fsync_dir(final.parent)
        return final.parent

    def stage(self, budget: MemoryBudget | None = None) -> BlobWriter:
        """A new blob to write; it is only a temporary file (or bytes held in memory, as far
        as `budget` allows) until `publish`."""
        return BlobWriter(self._staging(), budget)

    def _staging(self) -> Path:
        """The staging directory, made the first time it is needed."""
        directory = self.root / STAGING
        if not self.staging_made:
            directory.mkdir(parents=True, exist_ok=True)
            self.staging_made = True
        return directory

    def publish(self, staged: Iterable[Staged]) -> None:
        """Make staged blobs durable under their names: sync every file (side by side), rename
        each into place, then sync each directory once. A blob already in place is kept and
        its staged copy dropped."""
        fresh: dict[str, Staged] = {}
        for blob in staged:
            if blob.digest in fresh or self.path(blob.digest).exists():
                blob.discard()
            else:
                fresh[blob.digest] = blob
        _side_by_side(_make_durable, list(fresh.values()))
        directories = set()
        for blob in fresh.values():
            final = self.path(blob.digest)
            try:
                os.replace(blob.path, final)
            except FileNotFoundError:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(blob.path, final)
            directories.add(final.parent)
        _side_by_side(fsync_dir, sorted(directories))

    def sweep_staging(self, older_than: float = 3600.0) -> int:
        """Remove staged files a crash left behind; a batch never takes an hour."""
        directory = self.root / STAGING
        if not directory.is_dir():
            return 0
        limit = time.time() - older_than
        old = [p for p in directory.iterdir() if p.stat().st_mtime < limit]
        for path in old:
            path.unlink(missing_ok=True)
        return len(old)

    def get(self, digest: str) -> bytes:
        """The blob's bytes, from its row or else its file."""
        data = self._row(digest)
        return self.path(digest).read_bytes() if data is None else data

    def _row(self, digest: str) -> bytes | None:
        if self.engine is None:
            return None
        with self.engine.connect() as connection:
            return blob_rows.fetch(connection, [digest]).get(digest)

    def free_bytes(self) -> int:
        """Bytes available to this process on the blob store's file system."""
        self.root.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.root).free


def _staged_name(directory: Path) -> Path:
    """A staged file's name, not made until `publish` (see `_NAMES`)."""
    return directory / f"stage-{os.getpid()}-{_NAMES}-{next(_NUMBERS)}"


def _side_by_side(work: Callable[[T], None], items: list[T]) -> None:
    """`work` on every item, in as many groups as there are sync threads, one task per group:
    a task (future, hand-off, wake-up) per file cost the stage more CPU than the sync itself,
    and a group still overlaps its syncs with the other groups'. Every group has ended
    before the first error is raised, so the caller's clean-up races no sync."""
    groups = [items[k::SYNC_THREADS] for k in range(min(SYNC_THREADS, len(items)))]
    tasks = [_SYNCERS.submit(_each, work, group) for group in groups]
    wait(tasks)
    for task in tasks:
        task.result()


def _each(work: Callable[[T], None], group: list[T]) -> None:
    for item in group:
        work(item)


def write_synced(path: Path, data: bytes) -> None:
    """Write `data` to `path` and return only once it is on disk."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _make_durable(blob: Staged) -> None:
    """A staged file synced; bytes held in memory written to their staged file first (a
    failure leaves that file to `Staged.discard`)."""
    if blob.data is None:
        _sync_file(blob.path)
        return
    with open(blob.path, "xb") as fh:
        fh.write(blob.data)
        fh.flush()
        os.fsync(fh.fileno())


def _sync_file(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new name in `path` durable."""
    _sync_file(path, os.O_RDONLY | os.O_DIRECTORY)
