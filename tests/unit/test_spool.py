"""The spool keeps the header block as the message goes by, exactly as `read_head` reads it
back from the finished file, however the message is cut into writes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import threading
from pathlib import Path

import pytest

from gateway.intake.accept import read_head
from gateway.intake.spool import FLUSH_SIZE, HEAD_LIMIT, DurableIO, SpoolFile

MESSAGES = [
    b"Subject: a\r\nFrom: b@c\r\n\r\nbody\r\n",
    b"Subject: no body\r\n",
    b"\r\n\r\nempty head\r\n",
    b"Subject: x\r\n\r\n",
    b"Subject: bare\n\nlf only\r\n\r\nthen crlf\r\n",
    b"X: " + b"h" * (HEAD_LIMIT - 5) + b"\r\n\r\nbody\r\n",
    b"X: " + b"h" * (HEAD_LIMIT - 6) + b"\r\n\r\nbody\r\n",
    b"X: " + b"h" * (HEAD_LIMIT - 7) + b"\r\n\r\nbody\r\n",
    b"X: " + b"h" * HEAD_LIMIT + b"\r\n\r\nbody\r\n",
    b"Subject: big\r\n\r\n" + b"y" * (3 * FLUSH_SIZE),
]


def written(directory: Path, message: bytes, cuts: list[int]) -> SpoolFile:
    spool = SpoolFile(directory)
    for start, end in zip([0, *cuts], [*cuts, len(message)], strict=True):
        spool.write(message[start:end])
        if spool.needs_flush:
            spool.flush()
    return spool


@pytest.mark.parametrize("number", range(len(MESSAGES)))
def test_the_head_kept_while_writing_is_what_read_head_reads_back(
    tmp_path: Path, number: int
) -> None:
    message = MESSAGES[number]
    rng = random.Random(number)
    cuttings = [[], list(range(1, min(len(message), 300)))]
    cuttings += [
        sorted(rng.sample(range(1, len(message)), min(20, len(message) - 1))) for _ in range(30)
    ]
    for cuts in cuttings:
        spool = written(tmp_path, message, cuts)
        head = spool.head
        spooled = spool.finish()
        assert head == read_head(spooled.path), cuts[:10]
        assert spooled.path.read_bytes() == message
        spooled.path.unlink()


def test_a_small_message_touches_the_disk_only_when_finished(tmp_path: Path) -> None:
    spool = written(tmp_path, MESSAGES[0], [3, 9])
    assert not spool.on_disk and list(tmp_path.iterdir()) == []
    spool.discard()
    assert list(tmp_path.iterdir()) == []
    big = written(tmp_path, MESSAGES[-1], [FLUSH_SIZE + 1])
    assert big.on_disk
    big.discard()
    assert not big.on_disk and list(tmp_path.iterdir()) == []


def test_views_and_many_small_writes_land_in_order_even_when_the_kernel_writes_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = bytes(range(256)) * 64
    pieces: list[bytes | memoryview] = [memoryview(block)[i : i + 4] for i in range(0, 6000, 4)]
    pieces += [b"", block, memoryview(block)[100:], b"z"]
    writev = os.writev

    def partial(fd: int, buffers: list[memoryview]) -> int:
        assert len(buffers) <= os.sysconf("SC_IOV_MAX")
        total = sum(len(b) for b in buffers)
        return writev(fd, [memoryview(b"".join(buffers))[: max(1, total // 3)]])

    monkeypatch.setattr(os, "writev", partial)
    spool = SpoolFile(tmp_path)
    for piece in pieces:
        spool.write(piece)
    spool.flush()
    spool.write(memoryview(block)[:10])
    spooled = spool.finish()
    expected = b"".join(pieces) + block[:10]
    assert spooled.path.read_bytes() == expected and spooled.size == len(expected)
    assert spooled.sha256 == hashlib.sha256(expected).hexdigest()
    spooled.path.unlink()


def test_durable_io_returns_results_and_errors_and_runs_jobs_side_by_side() -> None:
    pool = DurableIO(max_threads=4, name="test-io")
    gate = threading.Barrier(4, timeout=10)

    def meet(n: int) -> int:
        gate.wait()  # passes only when four jobs run at once
        return n * 2

    def broken() -> None:
        raise OSError("disk on fire")

    async def main() -> tuple[list[int], BaseException | None]:
        doubled = await asyncio.gather(*(pool.run(meet, n) for n in range(4)))
        failure = await asyncio.gather(pool.run(broken), return_exceptions=True)
        return list(doubled), failure[0]

    doubled, failure = asyncio.run(main())
    assert doubled == [0, 2, 4, 6]
    assert isinstance(failure, OSError)
