"""Content-addressed files: a blob's name is its sha256, so writing it twice is harmless.

A blob is durable before its hash is returned: temporary file, fsync, rename, fsync of the
directory. Callers commit database rows that name a blob only after `put` has returned.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
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

    def adopt(self, source: Path, digest: str) -> None:
        """Make the fsync'd file `source`, whose sha256 is `digest`, the blob `digest`.

        The caller vouches for the digest (it hashed the bytes while writing them). If the blob
        exists already, `source` is simply removed. Blocking (rename, directory fsync): many
        callers in parallel threads let the file system share one journal commit among them.
        """
        final = self.path(digest)
        if final.exists():
            source.unlink(missing_ok=True)
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, final)
        fsync_dir(final.parent)

    def get(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def free_bytes(self) -> int:
        """Bytes available to this process on the blob store's file system."""
        self.root.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.root).free


def write_synced(path: Path, data: bytes) -> None:
    """Write `data` to `path` and return only once it is on disk."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    """Make a rename or a new name in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
