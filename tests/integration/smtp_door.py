"""The SMTP door in this process: the real aiosmtpd server on a loopback port, its own event
loop in a thread, a real SQLite store. Tests talk to it with smtplib or raw sockets and read
what was stored, so each limit and refusal is seen as a client would see it."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from integration.servers import free_port
from sqlalchemy import select

from gateway import office
from gateway.config import DossierSettings, IntakeSettings, SmtpSettings
from gateway.intake.smtpd import door as smtpd
from gateway.store.db import Store, open_store, upgrade
from gateway.store.models import Message


class SmtpDoor:
    def __init__(
        self,
        workdir: Path,
        dossiers: list[DossierSettings],
        intake: IntakeSettings | None = None,
        **smtp_options: Any,
    ) -> None:
        self.store: Store = open_store(f"sqlite:///{workdir}/gateway.db", workdir / "blobs")
        upgrade(self.store.engine)
        with self.store.session.begin() as session:
            for spec in dossiers:
                office.put_dossier(session, spec)
        self.port = free_port()
        self.settings = replace(SmtpSettings(), port=self.port, **smtp_options)
        self.accepted = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        start = smtpd.start(self.settings, self.store, self._on_accept, intake)
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result(timeout=10)

    def _on_accept(self) -> None:
        self.accepted += 1

    def messages(self) -> list[Message]:
        with self.store.session() as session:
            return list(session.scalars(select(Message).order_by(Message.id)))

    def stop(self) -> None:
        async def close() -> None:
            await asyncio.wait_for(self.server.close(drain_timeout=1), 5)

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()
        self.store.engine.dispose()


def dossier(slug: str, senders: list[str] | None = None) -> DossierSettings:
    return DossierSettings(
        slug=slug,
        integration="none",
        addresses=[f"{slug}@docs.office.example"],
        allowed_senders=senders,
    )
