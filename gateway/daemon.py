"""`gateway run`: wire the doors, the rules stage and the workers into one event loop.

Start-up refuses a database behind the migrations; READY=1 is sent to systemd only once the
listener is bound; SIGTERM/SIGINT stop the SMTP door first, then the runners.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket

import structlog

from gateway import office
from gateway.config import Settings
from gateway.intake import smtp
from gateway.outbound.worker import DeliveryRunner
from gateway.pipeline import PipelineRunner, recognition_options
from gateway.store.db import check_current, open_store

log = structlog.get_logger(__name__)


def notify(state: str) -> None:
    """sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET, if systemd gave one."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode())


async def serve(settings: Settings) -> None:
    store = open_store(settings.database.url, settings.blob_dir, settings.database.busy_timeout)
    check_current(store.engine)
    with store.session.begin() as session:
        office.provision(session, settings)
    delivery = DeliveryRunner(store, settings.delivery)
    pipeline = PipelineRunner(
        store,
        settings.delivery,
        delivery.wake,
        recognition_options(settings.recognition, settings.source),
        settings.rules,
    )
    server = await smtp.start(settings.smtp, store, pipeline.wake.set)
    runners: list[asyncio.Task[None]] = [
        asyncio.create_task(pipeline.run(), name="pipeline"),
        asyncio.create_task(delivery.run(), name="delivery"),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("gateway_ready", smtp=f"{settings.smtp.host}:{settings.smtp.port}")
    notify("READY=1\nSTATUS=accepting mail")
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([stopper, *runners], return_when=asyncio.FIRST_COMPLETED)
    crashed = [t.exception() for t in runners if t.done()]
    notify("STOPPING=1")
    log.info("gateway_stopping")
    server.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_closed(), 10)
    for task in [stopper, *runners]:
        task.cancel()
    await asyncio.gather(stopper, *runners, return_exceptions=True)
    store.engine.dispose()
    for error in crashed:
        if error is not None:
            raise error
    log.info("gateway_stopped")
