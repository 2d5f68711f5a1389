"""aiosmtpd with a streaming DATA command: chunks in, a spooled file out, bounded memory.

aiosmtpd's own DATA loop awaits one `readuntil` per line and joins the whole message in memory
(at 5 MB, ~65,000 awaits and the message held twice). Here the reader is asked for everything
up to the next `.CRLF` it holds, or for the whole buffer when there is none; the decoder
(`data_decoder`) decides whether that `.CRLF` ends the message. Every candidate end is a chunk
boundary, so a chunk never runs past the end and pipelined commands stay in the reader for
aiosmtpd's command loop.

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
from gateway.intake.smtpd.lean import LeanSMTP
from gateway.intake.spool import DURABLE_IO, SpoolFile

log = structlog.get_logger(__name__)

# What the reader hands over at most is decided by asyncio: one receive, up to 256 KiB.
CANDIDATE_END = b".\r\n"
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

    async def _receive(self, spool: SpoolFile) -> str:
        """Read the message to its end whatever happens, so the reply comes where the client
        expects it; only a complete, valid and durable message reaches the handler."""
        assert self.envelope is not None and self.session is not None
        decoder = DataDecoder(self.data_size_limit or None, self.max_line_chars)
        failure: OSError | None = None
        while not decoder.done:
            pieces, _ = decoder.feed(await self._next_chunk())
            if pieces and failure is None:
                for piece in pieces:
                    spool.write(piece)
                if spool.needs_flush:
                    failure = await _durably(spool.flush)
        if decoder.error is not None:
            log.info("smtp_data_refused", error=decoder.error.value, peer=_peer(self.session))
            return refusal(decoder.error)
        if failure is not None:
            log.error("smtp_spool_failed", error=repr(failure), peer=_peer(self.session))
            return checks.storage_failure(failure)
        return await self._spool_handler.handle_SPOOLED(self, self.session, self.envelope, spool)

    async def _next_chunk(self) -> bytes:
        """Up to and including the next `.CRLF`, or all the reader holds when it has none."""
        self._reset_timeout()
        try:
            return await self._reader.readuntil(CANDIDATE_END)
        except asyncio.LimitOverrunError as exc:
            # `consumed` stops short of any `.CRLF` the buffer might still complete.
            return await self._reader.read(exc.consumed)


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
