"""DATA blocks from the transport into the decoder and spool: flow control and the hand-back.

A transport stand-in records pausing and resuming; the reader is asyncio's own `StreamReader`,
because what is relied on is its behaviour (what it holds, and `read` resuming the transport).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.intake.smtpd.data_decoder import DataDecoder
from gateway.intake.smtpd.data_inflow import DataInflow
from gateway.intake.smtpd.smtp_data import _held_bytes
from gateway.intake.spool import FLUSH_SIZE, SpoolFile


class Transport(asyncio.ReadTransport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.paused = False

    def pause_reading(self) -> None:
        self.calls.append("pause")
        self.paused = True

    def resume_reading(self) -> None:
        self.calls.append("resume")
        self.paused = False

    def is_reading(self) -> bool:
        return not self.paused


def test_what_the_reader_holds_is_taken_at_once_and_its_pause_lifted() -> None:
    async def main() -> None:
        transport = Transport()
        reader = asyncio.StreamReader(limit=10)
        reader.set_transport(transport)
        assert await _held_bytes(reader) == b""
        reader.feed_data(b"Subject: early\r\n\r\nsent before the 354\r\n")
        assert transport.paused  # more than twice its limit: the reader paused reading
        held = await _held_bytes(reader)
        assert held == b"Subject: early\r\n\r\nsent before the 354\r\n"
        assert transport.calls == ["pause", "resume"]
        reader.feed_data(b"NOOP\r\n")
        assert await reader.readuntil(b"\r\n") == b"NOOP\r\n"

    asyncio.run(main())


def test_reading_stops_while_a_flush_is_due_and_the_rest_goes_back_to_the_reader(
    tmp_path: Path,
) -> None:
    line = b"x" * 78 + b"\r\n"
    block = line * (FLUSH_SIZE // len(line) // 3 + 1)

    async def main() -> None:
        transport = Transport()
        reader = asyncio.StreamReader()
        spool = SpoolFile(tmp_path)
        inflow = DataInflow(DataDecoder(None), spool, transport, reader)
        flushed: list[int] = []

        async def flush() -> OSError | None:
            assert transport.paused  # nothing may arrive while the thread writes
            flushed.append(spool.size)
            spool.flush()
            return None

        running = asyncio.ensure_future(inflow.run(flush))
        for _ in range(3):
            assert not transport.paused
            inflow.take(block)
        assert transport.paused  # three blocks make FLUSH_SIZE
        await asyncio.sleep(0)
        assert not transport.paused and flushed == [3 * len(block)]
        inflow.take(b"last\r\n.\r\nQUIT\r\n")
        await running
        assert inflow.done and inflow.failure is None
        assert transport.calls == ["pause", "resume"]
        assert await reader.readuntil(b"\r\n") == b"QUIT\r\n"
        spooled = spool.finish()
        assert spooled.path.read_bytes() == 3 * block + b"last\r\n"

    asyncio.run(main())


def test_a_storage_error_is_kept_and_nothing_more_is_written(tmp_path: Path) -> None:
    block = (b"y" * 98 + b"\r\n") * (FLUSH_SIZE // 100 + 1)

    async def main() -> None:
        transport = Transport()
        spool = SpoolFile(tmp_path)
        inflow = DataInflow(DataDecoder(None), spool, transport, asyncio.StreamReader())
        failure = OSError(28, "No space left on device")

        async def flush() -> OSError | None:
            return failure

        running = asyncio.ensure_future(inflow.run(flush))
        inflow.take(block)
        await asyncio.sleep(0)
        size = spool.size
        inflow.take(block)
        inflow.take(b".\r\n")
        await running
        assert inflow.failure is failure and spool.size == size
        assert transport.calls == ["pause", "resume"]
        spool.discard()

    asyncio.run(main())


def test_after_the_clients_eof_what_follows_the_end_is_dropped(tmp_path: Path) -> None:
    async def main() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"all at once\r\n.\r\nQUIT\r\n")
        reader.feed_eof()
        spool = SpoolFile(tmp_path)
        inflow = DataInflow(DataDecoder(None), spool, Transport(), reader)
        inflow.take(await _held_bytes(reader))
        assert inflow.done and spool.size == len(b"all at once\r\n")
        spool.discard()

    asyncio.run(main())
