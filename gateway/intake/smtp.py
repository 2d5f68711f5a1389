"""The SMTP door (aiosmtpd), created inside the daemon's own event loop.

Routing is on the envelope recipient only: an address no dossier owns is refused at RCPT, so
the gateway can never relay. `250` is answered only after `accept_message` has fsync'd the raw
message and committed its row; any failure on the way answers `451 4.3.0` so the client keeps
the message and tries again, never aiosmtpd's default `500`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select

from gateway.config import SmtpSettings
from gateway.intake.accept import Envelope as IntakeEnvelope
from gateway.intake.accept import accept_message
from gateway.store.db import Store
from gateway.store.models import Address

log = structlog.get_logger(__name__)

TEMPFAIL = "451 4.3.0 Requested action aborted: local error in processing, try again later"


class Handler:
    def __init__(self, store: Store, on_accept: Callable[[], None]) -> None:
        self.store = store
        self.on_accept = on_accept

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        try:
            known = await asyncio.to_thread(self._is_dossier_address, address)
        except Exception:
            log.exception("smtp_rcpt_lookup_failed", rcpt=address)
            return TEMPFAIL
        if not known:
            log.info("smtp_rcpt_refused", rcpt=address, peer=_peer(session))
            return f"550 5.1.1 <{address}>: no dossier has this address"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content
        if not isinstance(raw, bytes):
            return "554 5.6.0 Message content could not be read"
        intake = IntakeEnvelope("smtp", envelope.mail_from or "", list(envelope.rcpt_tos))
        try:
            accepted = await asyncio.to_thread(accept_message, self.store, raw, intake)
        except Exception:
            log.exception("smtp_accept_failed", peer=_peer(session), size=len(raw))
            return TEMPFAIL
        log.info(
            "message_accepted",
            message=accepted.message_id,
            duplicate=accepted.duplicate,
            size=len(raw),
            rcpts=len(envelope.rcpt_tos),
        )
        self.on_accept()
        return f"250 2.0.0 Ok: queued as {accepted.message_id}"

    async def handle_exception(self, error: Exception) -> str:
        log.error("smtp_session_error", error=repr(error))
        return TEMPFAIL

    def _is_dossier_address(self, address: str) -> bool:
        with self.store.session() as session:
            found = session.scalars(
                select(Address.id).where(Address.address == address.strip().lower())
            ).first()
            return found is not None


def _peer(session: Session) -> str:
    peer = session.peer
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


async def start(
    settings: SmtpSettings, store: Store, on_accept: Callable[[], None]
) -> asyncio.Server:
    handler = Handler(store, on_accept)
    loop = asyncio.get_running_loop()

    def protocol() -> SMTP:
        return SMTP(
            handler,
            hostname=settings.hostname,
            data_size_limit=settings.max_message_size,
            timeout=settings.timeout,
            enable_SMTPUTF8=True,
            decode_data=False,
            ident="gateway ESMTP",
        )

    return await loop.create_server(protocol, settings.host, settings.port)
