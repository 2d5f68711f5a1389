"""Delivery into a local or mounted folder that the accounting package reads.

Same contract as SFTP: a temporary name, then a rename, and an existing final file with the
same bytes counts as already delivered (a crash between rename and commit must not copy twice).
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import os
from pathlib import Path

from gateway.outbound.base import Outgoing, PermanentError, TransientError
from gateway.outbound.kinds import DirectoryOptions
from gateway.outbound.naming import render, target_folder
from gateway.store.blobs import fsync_dir, write_synced


class DirectoryAdapter:
    def __init__(self, options: DirectoryOptions) -> None:
        self.options = options

    async def deliver(self, item: Outgoing) -> str:
        return await asyncio.to_thread(self._deliver, item)

    async def close(self) -> None:
        return None

    def target_dir(self, item: Outgoing) -> Path:
        return self.options.path / target_folder(self.options, item)

    def _deliver(self, item: Outgoing) -> str:
        folder = self.target_dir(item)
        final = folder / render(self.options.filename_template, item)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if _same_file_exists(final, item):
                return str(final)
            if item.uncertain:
                for leftover in folder.glob(f".{glob.escape(final.name)}.*.part"):
                    leftover.unlink(missing_ok=True)
            tmp = folder / f".{final.name}.{item.attempt_id}.part"
            write_synced(tmp, item.data)
            if final.exists():
                tmp.unlink()
                raise PermanentError(
                    "name-conflict", f"{final.name} already exists with other content"
                )
            os.rename(tmp, final)
            fsync_dir(folder)
        except OSError as exc:
            raise TransientError("io-error", f"{folder}: {exc.strerror or exc}") from exc
        return str(final)


def _same_file_exists(final: Path, item: Outgoing) -> bool:
    try:
        if final.stat().st_size != len(item.data):
            return False
    except FileNotFoundError:
        return False
    return hashlib.sha256(final.read_bytes()).hexdigest() == item.sha256
