"""`gateway run`: wire the doors, the rules stage and the workers into one event loop.

The SMTP door (`smtp.processes` above 1, or `daemon.smtp_process`) and the rules stage
(`daemon.rules_process`) may run in child processes the daemon keeps (`gateway.children`);
wake-ups pass through the daemon: a door accepted a message → the rules stage, documents
queued → the delivery workers.
Start-up refuses a database behind the migrations; READY=1 goes to systemd only once the
listeners are bound and the database answered. SIGHUP reloads the config (a bad one is
refused and the old one keeps running; a rules-stage child is sent `reload`); SIGTERM closes
the doors first, stops the rules stage, returns in-flight deliveries to the queue and exits 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Coroutine
from typing import Any

import structlog
from sqlalchemy import func, select

from gateway import children, config, office
from gateway.intake.folder import FolderDoor
from gateway.intake.imap import ImapPoller
from gateway.intake.senders import authentication
from gateway.intake.smtpd import door as smtpd
from gateway.intake.smtpd import listeners
from gateway.logging import configure as configure_logging
from gateway.metrics import HealthServer
from gateway.outbound.worker import DeliveryRunner
from gateway.pipeline import process as rules_stage
from gateway.pipeline.runner import PipelineRunner, recognition_options
from gateway.store.db import Store, check_current, open_store
from gateway.store.models import Delivery

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


class Daemon:
    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        self.store: Store = open_store(
            settings.database.url, settings.blob_dir, settings.database.busy_timeout
        )
        self.delivery = DeliveryRunner(self.store, settings.delivery)
        # The rules stage here, or in a child: either way `accepted` wakes it.
        self.pipeline: PipelineRunner | None = None
        self.rules: children.ChildPool | None = None
        self.accepted: asyncio.Event
        if settings.daemon.rules_process:
            # Checked here, so that a bad schema folder stops the start-up (exit 78).
            recognition_options(settings.recognition, settings.source)
            self.rules = rules_stage.pool(settings, self.delivery.wake.set)
            self.accepted = children.Forward(self._wake_rules)
        else:
            self.pipeline = rules_stage.runner(self.store, settings, self.delivery.wake)
            self.accepted = self.pipeline.wake
        self.health = HealthServer(self.store, [self._listening, self._rules_running])
        self.smtp: smtpd.SmtpDoor | None = None
        self.sockets: list[socket.socket] = []
        self.listeners: children.ChildPool | None = None
        self.stopping = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        await self._start()
        crashed = await self._wait_for_stop()
        await self._stop()
        if crashed is not None:
            raise crashed

    async def _start(self) -> None:
        # Signals first: a SIGHUP or SIGTERM that arrives as soon as the port answers must be
        # handled, not take the process down with the default action.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        check_current(self.store.engine)
        await asyncio.to_thread(self._provision, self.settings)
        intake = self.settings.intake
        if intake.dns_resolver:
            host, _, port = intake.dns_resolver.partition(":")
            authentication.use_resolver(host, int(port or 53))
        # Health first: once the SMTP port answers, so do /livez and /readyz.
        if self.settings.metrics.enabled:
            await self.health.start(self.settings.metrics.host, self.settings.metrics.port)
        await self._open_smtp()
        if self.pipeline is not None:
            self._spawn(self.pipeline.run(), "pipeline")
        if self.rules is not None:
            self._spawn(self.rules.run(), "rules-stage")
        self._spawn(self.delivery.run(), "delivery")
        for account in self.settings.imap:
            poller = ImapPoller(account, self.store, intake, self.accepted)
            self._spawn(poller.run(), f"imap:{account.name}")
        if self.settings.folder.root:
            folder = FolderDoor(self.settings.folder, self.store, intake, self.accepted)
            self._spawn(folder.run(), "folder")
        self._spawn(self._report_status(), "status")
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if watchdog_usec > 0:
            self._spawn(self._watchdog(watchdog_usec / 1_000_000), "watchdog")
        log.info("gateway_ready", smtp=f"{self.settings.smtp.host}:{self.settings.smtp.port}")
        notify("READY=1\nSTATUS=accepting mail")

    async def _open_smtp(self) -> None:
        """The SMTP door here, or bound here and answered by listener processes."""
        smtp = self.settings.smtp
        if smtp.processes == 1 and not self.settings.daemon.smtp_process:
            self.smtp = await smtpd.start(smtp, self.store, self.accepted.set, self.settings.intake)
            return
        # What is left here only fills and empties queues; under CPU pressure a client waiting
        # for its 250 comes first. The loop thread keeps its priority, the threads that
        # recognise documents and write the database get a lower one.
        children.lower_background_priority()
        self.sockets = listeners.bind(smtp.host, smtp.port)
        fds = [sock.fileno() for sock in self.sockets]
        self.listeners = listeners.pool(self.settings, fds, self.accepted.set)
        self._spawn(self.listeners.run(), "smtp-listeners")

    def _wake_rules(self) -> None:
        """A door accepted a message: the rules-stage child starts on it at once."""
        assert self.rules is not None
        self.rules.send(children.WAKE)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self.tasks.append(asyncio.create_task(work, name=name))

    def _provision(self, settings: config.Settings) -> None:
        with self.store.session.begin() as session:
            office.provision(session, settings)

    async def _wait_for_stop(self) -> BaseException | None:
        """Wait for SIGTERM, or for a runner to die, which must take the daemon down loudly."""
        stopper = asyncio.create_task(self.stopping.wait())
        await asyncio.wait([stopper, *self.tasks], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("runner_crashed", runner=task.get_name(), error=repr(task.exception()))
                return task.exception()
        return None

    async def _stop(self) -> None:
        notify("STOPPING=1")
        log.info("gateway_stopping")
        drain = self.settings.daemon.drain_timeout
        closing = [] if self.smtp is None else [self.smtp.close(drain)]
        if self.listeners is not None:
            closing.append(self.listeners.stop(drain))
        await asyncio.gather(*closing)
        for sock in self.sockets:
            sock.close()
        if self.rules is not None:
            await self.rules.stop(drain)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.health.close()
        self.store.engine.dispose()
        log.info("gateway_stopped")

    def reload(self) -> None:
        """SIGHUP: take the new config if it is valid; otherwise say why and keep the old."""
        try:
            new = config.load(self.settings.source)
        except config.ConfigError as exc:
            log.error("reload_refused", error=str(exc))
            return
        asyncio.get_running_loop().create_task(self._apply(new))

    async def _apply(self, new: config.Settings) -> None:
        try:
            await asyncio.to_thread(self._provision, new)
            if self.pipeline is not None:
                rules_stage.configure(self.pipeline, new)
        except (office.SetupError, config.ConfigError) as exc:
            log.error("reload_refused", error=str(exc))
            return
        restart_needed = [
            name
            for name in ("smtp", "intake", "imap", "folder", "metrics", "database")
            if getattr(new, name) != getattr(self.settings, name)
        ]
        for layout in ("rules_process", "smtp_process"):
            if getattr(new.daemon, layout) != getattr(self.settings.daemon, layout):
                restart_needed.append(f"daemon.{layout}")
        if restart_needed:
            log.warning("reload_needs_restart", changed=restart_needed)
        self.settings = new
        self.delivery.settings = new.delivery
        if self.rules is not None:
            self.rules.send(children.RELOAD)
        configure_logging(new.gateway.log_level, new.gateway.log_format)
        log.info("reloaded", source=new.source)

    def _listening(self) -> str | None:
        if self.stopping.is_set():
            return "stopping"
        if self.listeners is not None:
            return None if self.listeners.serving() else "smtp: a listener is restarting"
        if self.smtp is None or not self.smtp.is_serving():
            return "smtp: not listening"
        return None

    def _rules_running(self) -> str | None:
        if self.rules is None or self.rules.serving() or self.stopping.is_set():
            return None
        return "rules stage: restarting"

    async def _report_status(self) -> None:
        while True:
            counts = await asyncio.to_thread(self._queue_counts)
            text = " ".join(f"{state}={n}" for state, n in sorted(counts.items()))
            notify(f"STATUS=accepting mail; queue: {text or 'empty'}")
            await asyncio.sleep(self.settings.daemon.status_interval)

    def _queue_counts(self) -> dict[str, int]:
        with self.store.session() as session:
            rows = session.execute(select(Delivery.state, func.count()).group_by(Delivery.state))
            return {state.value: count for state, count in rows}

    async def _watchdog(self, interval: float) -> None:
        """Ping systemd from the loop itself, so a blocked loop is a missed ping."""
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(interval / 2)


async def serve(settings: config.Settings) -> None:
    await Daemon(settings).run()
