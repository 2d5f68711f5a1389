"""The SMTP door (aiosmtpd), created inside the daemon's own event loop.

`start` listens, with the protocol of `session` and the decisions of `handler`; `SmtpDoor`
holds the listeners so a shutdown can drain their sessions before closing. Limits are explicit
(size, recipients, line length, sessions, idle time) and every refusal carries an enhanced
status code, including the replies aiosmtpd words itself.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP

from gateway.config import IntakeSettings, SmtpSettings
from gateway.intake import spool
from gateway.intake.smtpd import login
from gateway.intake.smtpd.group_commit import GroupCommitter
from gateway.intake.smtpd.handler import Handler
from gateway.intake.smtpd.session import GatewaySMTP, SessionGate
from gateway.store.db import Store

log = structlog.get_logger(__name__)

# Connections the kernel queues before any process accepts them (asyncio's default is 100).
BACKLOG = 1024


def tls_context(settings: SmtpSettings) -> ssl.SSLContext | None:
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key or None)
    return context


@dataclass
class SmtpDoor:
    """The listeners and their sessions, so a shutdown can drain them before closing."""

    servers: list[asyncio.Server]
    gate: SessionGate
    committer: GroupCommitter

    def is_serving(self) -> bool:
        return all(s.is_serving() for s in self.servers) and not self.gate.draining

    async def serve_forever(self) -> None:
        await asyncio.gather(*(server.serve_forever() for server in self.servers))

    async def close(self, drain_timeout: float) -> None:
        cut = await self.gate.drain(drain_timeout)
        if cut:
            log.warning("smtp_sessions_cut", sessions=cut, after_seconds=drain_timeout)
        for server in self.servers:
            server.close()
        await asyncio.gather(*(server.wait_closed() for server in self.servers))
        self.committer.close()


async def start(
    settings: SmtpSettings,
    store: Store,
    on_accept: Callable[[], None],
    intake: IntakeSettings | None = None,
    sockets: Sequence[socket.socket] = (),
) -> SmtpDoor:
    """Listen on `settings.host`/`port`, or on `sockets` already bound by another process."""
    handler = Handler(store, on_accept, settings, intake or IntakeSettings())
    swept = await asyncio.to_thread(spool.sweep, store.blobs.spool_dir, 2 * settings.timeout)
    if swept:
        log.info("smtp_spool_swept", files=swept)
    gate = SessionGate(settings.max_sessions)
    context = tls_context(settings)
    auth: dict[str, Any] = {}
    if settings.auth_file:
        auth = {
            "authenticator": login.Authenticator(login.load_users(settings.auth_file)),
            "auth_require_tls": True,
            "command_call_limit": {"AUTH": login.MAX_AUTH_ATTEMPTS, "*": 10**9},
        }
    loop = asyncio.get_running_loop()

    def protocol() -> SMTP:
        return GatewaySMTP(
            handler,
            gate,
            settings.max_line_length,
            hostname=settings.hostname,
            data_size_limit=settings.max_message_size,
            timeout=settings.timeout,
            enable_SMTPUTF8=True,
            decode_data=False,
            ident="gateway ESMTP",
            tls_context=context,
            require_starttls=settings.require_tls,
            **auth,
        )

    if sockets:
        servers = [
            await loop.create_server(protocol, sock=sock, backlog=BACKLOG) for sock in sockets
        ]
    else:
        servers = [
            await loop.create_server(protocol, settings.host, settings.port, backlog=BACKLOG)
        ]
    return SmtpDoor(servers, gate, handler.committer)
