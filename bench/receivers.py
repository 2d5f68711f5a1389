"""Bare receivers run as their own process, so the load generator never shares their core.

`python -m bench.receivers aiosmtpd PORT` is aiosmtpd's stock DATA loop, answering 250 and
dropping the message; `streaming PORT DIR` is the gateway's streaming DATA reader writing to a
spool file in DIR, fsync'd, then dropping it: the protocol and the file, without the checks,
the blob store or the database.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.intake.smtpd.smtp_data import StreamingSMTP
from gateway.intake.spool import DURABLE_IO, SpoolFile


class Discard:
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 2.0.0 Ok: discarded"

    async def handle_SPOOLED(
        self, server: SMTP, session: Session, envelope: Envelope, spool: SpoolFile
    ) -> str:
        await DURABLE_IO.run(_finish_and_drop, spool)
        return "250 2.0.0 Ok: discarded"


def _finish_and_drop(spool: SpoolFile) -> None:
    spool.finish().path.unlink()


async def serve(kind: str, port: int, spool: Path | None) -> None:
    handler = Discard()
    options: dict[str, Any] = {
        "data_size_limit": 64 * 1024 * 1024,
        "decode_data": False,
        "hostname": "bench.localhost",
    }

    def protocol() -> SMTP:
        if kind == "streaming":
            assert spool is not None
            return StreamingSMTP(handler, spool_dir=spool, **options)
        return SMTP(handler, **options)

    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


async def serve_door(port: int, state: Path) -> None:
    """The gateway's SMTP door alone, durable (fsync + group commit), no rules stage; it logs
    as the daemon does (JSON lines at INFO), which is part of what a message costs."""
    from gateway.config import SmtpSettings
    from gateway.intake.smtpd import door, listeners
    from gateway.logging import configure
    from gateway.store.db import open_store, upgrade
    from gateway.store.models import Address, Dossier

    configure("info", "json")
    store = open_store(f"sqlite:///{state}/gateway.db", state / "blobs")
    upgrade(store.engine)
    with store.session.begin() as session:
        session.add(Dossier(slug="bench", addresses=[Address(address="bench@gateway.localhost")]))
    # Sessions unbounded in practice: a paced load that a busy machine holds up arrives in a
    # burst, which the bench measures rather than refuses.
    settings = SmtpSettings(port=port, max_message_size=64 * 1024 * 1024, max_sessions=10_000)
    smtp_door = await door.start(settings, store, lambda: None)
    listeners.settle_heap()  # as a listener process does
    await smtp_door.serve_forever()


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    directory = Path(sys.argv[3]) if len(sys.argv) > 3 else None
    if kind == "door":
        assert directory is not None
        asyncio.run(serve_door(port, directory))
    else:
        asyncio.run(serve(kind, port, directory))
