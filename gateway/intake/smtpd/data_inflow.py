"""The bytes of one DATA, from the transport straight into the decoder and the spool file.

While a DATA is under way the protocol hands every block it receives here instead of to its
`StreamReader`. The reader would copy each block into its buffer and out again, search it for a
candidate end, and hand it over one line at a time wherever a line ends in a full stop, which
in ordinary prose is most lines. Here a block is decoded whole, as it came from the socket, and
its message bytes wait in the spool file's memory; when they reach `FLUSH_SIZE` reading stops
until a durable-I/O thread has written them, so memory stays bounded per session.

The bytes after the end line are handed to the reader at once, in the same call, so pipelined
commands reach aiosmtpd's command loop in the order they came.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gateway.intake.smtpd.data_decoder import DataDecoder
from gateway.intake.spool import SpoolFile


class DataInflow:
    """One DATA's decoder and spool file, fed block by block from `data_received`."""

    def __init__(
        self,
        decoder: DataDecoder,
        spool: SpoolFile,
        transport: asyncio.ReadTransport,
        reader: asyncio.StreamReader,
    ) -> None:
        self.decoder = decoder
        self.spool = spool
        self.transport = transport
        self.reader = reader
        # The first storage error: from then on the message is only read to its end.
        self.failure: OSError | None = None
        self._flush_due = False
        self._waiter: asyncio.Future[None] | None = None

    @property
    def done(self) -> bool:
        """True once the end line was seen: what follows belongs to the command reader."""
        return self.decoder.done

    def take(self, block: bytes) -> None:
        """Decode one received block; on the event loop, never while reading is paused."""
        pieces, rest = self.decoder.feed(block)
        if self.failure is None:
            for piece in pieces:
                self.spool.write(piece)
        if self.decoder.done:
            # After the client's EOF (the session is being cancelled) nothing more is read.
            if rest and not self.reader.at_eof():
                self.reader.feed_data(rest)
            self._wake()
        elif self.spool.needs_flush and self.failure is None:
            self.transport.pause_reading()
            self._flush_due = True
            self._wake()

    async def run(self, flush: Callable[[], Awaitable[OSError | None]]) -> None:
        """Until the end line: write out what is pending with `flush` whenever it is due."""
        try:
            while not self.decoder.done:
                if self._flush_due:
                    self.failure = await flush()
                    self._resume()
                else:
                    self._waiter = asyncio.get_running_loop().create_future()
                    await self._waiter
        finally:
            self._resume()

    def _resume(self) -> None:
        if self._flush_due:
            self._flush_due = False
            self.transport.resume_reading()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
