"""aiosmtpd with a streaming DATA command: blocks in, a spooled file out, bounded memory.

aiosmtpd's own DATA loop awaits one `readuntil` per line and joins the whole message in memory
(at 5 MB, ~65,000 awaits and the message held twice). Here, for the length of a DATA, every
block the transport receives goes to a `DataInflow` (decoder and spool file) rather than to
the protocol's `StreamReader`; the decoder (`data_decoder`) finds the end, and what follows it
goes back to the reader for aiosmtpd's command loop.

The handler gets the complete message through `handle_SPOOLED` instead of `handle_DATA`, as a
`SpoolFile` not yet durable, its header block in `head`: it checks it, and makes it durable with
`finish` (in a thread, together with whatever else it does to the file) before answering `250`.
A message it refuses is dropped here, and one under `FLUSH_SIZE` never reached the disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from gateway.intake.smtpd import checks
from gateway.intake.smtpd.data_decoder import MAX_LINE_CHARS, DataDecoder, DataError
from gateway.intake.smtpd.data_inflow import DataInflow
from gateway.intake.smtpd.lean import LeanSMTP
from gateway.intake.spool import DURABLE_IO, SpoolFile

log = structlog.get_logger(__name__)

T = TypeVar("T")


class SpoolHandler(Protocol):
    async def handle_SPOOLED(
        self, server: SMTP, session: Session, envelope: Envelope, spool: SpoolFile
    ) -> str:
        """Check the message; make it durable (`spool.finish()`, blocking) and recorded, then
        return the reply (`250 ...`). The finished file is the handler's to adopt or remove."""
        ...


def refusal(error: DataError) -> str:
    """The same replies as the rest of the SMTP door gives for these faults (`checks`)."""
    if error is DataError.TOO_BIG:
        return checks.TOO_BIG
    if error is DataError.LINE_TOO_LONG:
        return checks.LINE_TOO_LONG
    return checks.BARE_LINE_ENDING


class StreamingSMTP(LeanSMTP):
    """An aiosmtpd `SMTP` whose DATA streams to a spool file in `spool_dir`."""

    # The DATA under way, while its bytes are still coming.
    _inflow: DataInflow | None = None

    def __init__(
        self,
        handler: SpoolHandler,
        *args: Any,
        spool_dir: Path,
        max_line_chars: int = MAX_LINE_CHARS,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, *args, **kwargs)
        self.spool_dir = spool_dir
        self.max_line_chars = max_line_chars
        self._spool_handler = handler

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None and self.session is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        spool = SpoolFile(self.spool_dir)
        try:
            reply = await self._receive(spool)
        except BaseException:
            spool.discard()  # cancelled or failed: nothing more may be awaited here
            raise
        # A refused or failed message is still ours: a file to remove only past FLUSH_SIZE.
        if spool.on_disk:
            failure = await _durably(spool.discard)
            if failure is not None:
                log.error("smtp_spool_discard_failed", error=repr(failure))
        else:
            spool.discard()
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(reply)

    def data_received(self, data: bytes) -> None:
        inflow = self._inflow
        if inflow is None or inflow.done:
            super().data_received(data)
        else:
            self._reset_timeout()
            inflow.take(data)

    async def _receive(self, spool: SpoolFile) -> str:
        """Read the message to its end whatever happens, so the reply comes where the client
        expects it; only a complete, valid and durable message reaches the handler."""
        assert self.envelope is not None and self.session is not None
        assert isinstance(self.transport, asyncio.ReadTransport)
        decoder = DataDecoder(self.data_size_limit or None, self.max_line_chars)
        inflow = DataInflow(decoder, spool, self.transport, self._reader)
        early = await _held_bytes(self._reader)
        self._inflow = inflow
        try:
            if early:
                inflow.take(early)
            await inflow.run(lambda: _durably(spool.flush))
        finally:
            self._inflow = None
        if decoder.error is not None:
            log.info("smtp_data_refused", error=decoder.error.value, peer=_peer(self.session))
            return refusal(decoder.error)
        if inflow.failure is not None:
            log.error("smtp_spool_failed", error=repr(inflow.failure), peer=_peer(self.session))
            return checks.storage_failure(inflow.failure)
        return await self._spool_handler.handle_SPOOLED(self, self.session, self.envelope, spool)


async def _held_bytes(reader: asyncio.StreamReader) -> bytes:
    """What the reader holds already: DATA a client sent without waiting for the `354`.

    `StreamReader` has no public call that returns what it holds without waiting for more
    when it holds nothing (`read` waits), so its length is taken from `_buffer`, the bytearray
    every `StreamReader` keeps (aiosmtpd itself clears it on STARTTLS); `read` then takes the
    bytes and resumes a transport the reader had paused. A unit test holds this behaviour.
    """
    held = len(reader._buffer)  # type: ignore[attr-defined]
    return await reader.read(held) if held else b""


async def _durably(work: Callable[[], T]) -> T | OSError:
    """Run blocking spool I/O in a durable-I/O thread. An error is returned, not raised: the
    rest of the DATA must still be read, or it would be taken for commands."""
    try:
        return await DURABLE_IO.run(work)
    except OSError as exc:
        return exc


def _peer(session: Session) -> str:
    peer = session.peer
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
