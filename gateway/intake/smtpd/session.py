"""The SMTP protocol object of the door and the gate every session passes.

`GatewaySMTP` is aiosmtpd's protocol with the streaming DATA of `smtp_data`: every reply
leaves through its `push`, which gives aiosmtpd's own replies enhanced status codes, counts
refusals and hangs up after a closing 421. `SessionGate` bounds the sessions across all
connections and drains them for a shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AnyStr

import structlog
from aiosmtpd.smtp import Envelope, Session

from gateway import metrics
from gateway.intake.accept import Route
from gateway.intake.smtpd import checks
from gateway.intake.smtpd.smtp_data import StreamingSMTP

if TYPE_CHECKING:
    from gateway.intake.smtpd.handler import Handler

log = structlog.get_logger(__name__)

TOO_BUSY = "421 4.7.0 Too many connections, try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
HARVESTING = "421 4.7.0 Too many unknown recipients, closing connection"
# Replies after which the server hangs up, as RFC 5321 §3.8 expects of a 421.
CLOSING = frozenset({HARVESTING})
# aiosmtpd's own replies, given the enhanced status codes of RFC 3463.
ENHANCED = {
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "552 Error: Too much mail data": checks.TOO_BIG,
    "552 Error: message size exceeds fixed maximum message size": (
        "552 5.3.4 Message size exceeds fixed maximum message size"
    ),
    "500 Command line too long": "500 5.5.2 Command line too long",
}


@dataclass
class Target:
    """One dossier the current transaction is for, with its allowed senders."""

    route: Route
    patterns: list[str]


class GatewaySession(Session):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.unknown_rcpts = 0


class GatewayEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[Target] = []


@dataclass
class SessionGate:
    """The sessions across all connections: past `limit` new ones get 421 4.7.0, and while
    draining for a shutdown, 421 4.3.2; sessions already in come to an end on their own."""

    limit: int
    sessions: set[GatewaySMTP] = field(default_factory=set)
    draining: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def enter(self, session: GatewaySMTP) -> str | None:
        """None when `session` may go on, else the reply that sends it away."""
        if self.draining:
            return SHUTTING_DOWN
        if len(self.sessions) >= self.limit:
            return TOO_BUSY
        self.sessions.add(session)
        self.idle.clear()
        return None

    def leave(self, session: GatewaySMTP) -> None:
        self.sessions.discard(session)
        if not self.sessions:
            self.idle.set()

    async def drain(self, timeout: float) -> int:
        """Refuse new sessions, wait up to `timeout` for the others; return how many were cut."""
        self.draining = True
        if self.sessions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle.wait(), timeout)
        cut = list(self.sessions)
        for session in cut:
            await session.close_for_shutdown()
        return len(cut)


class GatewaySMTP(StreamingSMTP):
    def __init__(self, handler: Handler, gate: SessionGate, line_length: int, **kw: Any) -> None:
        # aiosmtpd sizes its reader by it; `line_length` counts the CRLF, the decoder does not.
        self.line_length_limit = line_length
        super().__init__(handler, spool_dir=handler.spool_dir, max_line_chars=line_length - 2, **kw)
        self.gate = gate

    def _create_envelope(self) -> GatewayEnvelope:
        return GatewayEnvelope()

    def _create_session(self) -> GatewaySession:
        return GatewaySession(self.loop)

    async def push(self, status: AnyStr) -> None:
        """Every reply leaves here: aiosmtpd's own get enhanced codes, refusals are counted
        by their code as postfix_exporter does, and a closing 421 hangs up."""
        text = ENHANCED.get(status, status) if isinstance(status, str) else status.decode()
        if text[:1] in ("4", "5"):
            metrics.refused("smtp", text[:9].strip())
        await super().push(text)
        if text in CLOSING and self.transport is not None:
            self.transport.close()

    async def _handle_client(self) -> None:
        structlog.contextvars.bind_contextvars(smtp_session=secrets.token_hex(6))
        refusal = self.gate.enter(self)
        if refusal is not None:
            log.warning("smtp_session_refused", peer=peer(self.session), reply=refusal[:9])
            await self.push(refusal)
            if self.transport is not None:
                self.transport.close()
            return
        try:
            await super()._handle_client()
        finally:
            self.gate.leave(self)

    async def close_for_shutdown(self) -> None:
        """Past the drain deadline: say why, then hang up. A message whose DATA was not
        answered 250 stays with the client, which tries again later."""
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(ConnectionError):
                await self.push(SHUTTING_DOWN)
            self.transport.close()


def peer(session: Session | None) -> str:
    peer = session.peer if session is not None else None
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
