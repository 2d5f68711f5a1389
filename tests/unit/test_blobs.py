"""Publishing a batch of blobs: syncs side by side, and a failure raised only once every
sync has ended, so the caller's clean-up never races one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import gateway.store.blobs
from gateway.store.blobs import BlobStore, Staged


def staged(blobs: BlobStore, n: int) -> list[Staged]:
    found = []
    for k in range(n):
        writer = blobs.stage()
        writer.write(f"document {k}".encode())
        found.append(writer.finish())
    return found


def test_publish_puts_every_blob_in_place(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    batch = staged(blobs, 11)
    blobs.publish(batch)
    assert [blobs.get(b.digest) for b in batch] == [f"document {k}".encode() for k in range(11)]
    assert list((tmp_path / ".staging").iterdir()) == []


def test_a_failed_sync_is_raised_after_every_other_sync_has_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = BlobStore(tmp_path)
    batch = staged(blobs, 9)
    ended: list[str] = []

    def durable(blob: Staged) -> None:
        if blob is batch[0]:
            raise OSError("disk gone")
        time.sleep(0.05)
        ended.append(blob.digest)

    monkeypatch.setattr(gateway.store.blobs, "_make_durable", durable)
    with pytest.raises(OSError, match="disk gone"):
        blobs.publish(batch)
    first_group = batch[:: gateway.store.blobs.SYNC_THREADS]
    assert len(ended) == len(batch) - len(first_group)
