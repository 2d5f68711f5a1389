"""SMTP listener processes on one listening socket: the door on more than one core.

A Python process answers SMTP on one core at most, and the daemon's own process also runs the
rules stage and the workers. With `smtp.processes = N` above 1, the daemon binds the socket and
starts N processes that accept on it and run nothing but the SMTP door, as Postfix's master
binds port 25 for its smtpd processes; the daemon's own core is left to the rules stage and
the workers. The kernel gives each connection to a process that is waiting in accept, so a
busy one takes fewer. They share the database and the blob store; each commits its own groups.

Each listener is tied to the daemon by a socket pair of records: after every accepted message it
sends `wake`, which starts the daemon's rules stage at once, and its intake counts go the same
way, so the daemon's /metrics counts every process. When the daemon is gone the listener reads
end-of-file, stops accepting, lets its sessions finish and exits. The daemon restarts a listener
that dies, with a growing pause, and on SIGTERM lets them all drain before it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from gateway import config, metrics
from gateway.intake.smtpd import door as smtpd
from gateway.logging import configure as configure_logging
from gateway.store.db import open_store

log = structlog.get_logger(__name__)

# Pause before restarting a listener that died: doubles up to the maximum, reset after a calm run.
RESTART_PAUSE = 1.0
RESTART_PAUSE_MAX = 30.0
CALM_RUN = 60.0
# What a listener may take beyond the drain timeout to exit before it is killed.
EXIT_GRACE = 5.0
WAKE = "wake"
# Variables meant for the daemon alone: systemd talks to the main process only.
PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


@dataclass
class Listener:
    """One listener process and the daemon's end of its socket pair."""

    process: asyncio.subprocess.Process
    link: socket.socket
    started: float = field(default_factory=time.monotonic)


class ListenerPool:
    """The daemon's side: start, watch, restart and stop the extra listener processes."""

    def __init__(
        self,
        settings: config.Settings,
        listening_fds: Sequence[int],
        wake: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.listening_fds = list(listening_fds)
        self.wake = wake
        self.stopping = False
        self.listeners: list[Listener] = []

    async def run(self) -> None:
        """Keep `smtp.processes` listeners running until `stop`."""
        slots = range(self.settings.smtp.processes)
        await asyncio.gather(*(self._keep(slot) for slot in slots))

    def serving(self) -> bool:
        """Whether every listener is running (a dead one is being restarted)."""
        return not self.stopping and len(self.listeners) == self.settings.smtp.processes

    async def _keep(self, slot: int) -> None:
        pause = RESTART_PAUSE
        while not self.stopping:
            listener = await self._spawn()
            code = await listener.process.wait()
            self._forget(listener)
            if self.stopping:
                return
            calm = time.monotonic() - listener.started > CALM_RUN
            pause = RESTART_PAUSE if calm else min(pause * 2, RESTART_PAUSE_MAX)
            log.error("smtp_listener_exited", slot=slot, code=code, restart_in=pause)
            await asyncio.sleep(pause)

    async def _spawn(self) -> Listener:
        # Records, not a stream: each send arrives whole or, with the buffer full, not at all.
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        command = [sys.executable, "-m", __name__, "--config", self.settings.source]
        command += ["--link-fd", str(theirs.fileno())]
        for fd in self.listening_fds:
            command += ["--listen-fd", str(fd)]
        env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(theirs.fileno(), *self.listening_fds),
                env=env,
            )
        finally:
            theirs.close()
        listener = Listener(process, ours)
        asyncio.get_running_loop().add_reader(ours.fileno(), self._poked, listener)
        self.listeners.append(listener)
        log.info("smtp_listener_started", pid=process.pid)
        return listener

    def _poked(self, listener: Listener) -> None:
        try:
            record = listener.link.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            record = b""
        if not record:
            asyncio.get_running_loop().remove_reader(listener.link.fileno())
        elif record == WAKE.encode():
            self.wake()
        else:
            metrics.replay(record.decode(errors="replace"))

    def _forget(self, listener: Listener) -> None:
        """Drop an exited listener; both its watcher and `stop` may get here first."""
        if listener not in self.listeners:
            return
        self.listeners.remove(listener)
        asyncio.get_running_loop().remove_reader(listener.link.fileno())
        listener.link.close()

    async def stop(self, drain_timeout: float) -> None:
        """SIGTERM to every listener; they drain like the daemon's own door, or are killed."""
        self.stopping = True
        running = list(self.listeners)
        for listener in running:
            with contextlib.suppress(ProcessLookupError):
                listener.process.send_signal(signal.SIGTERM)
        await asyncio.gather(*(self._reap(x, drain_timeout + EXIT_GRACE) for x in running))

    async def _reap(self, listener: Listener, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await listener.process.wait()
        except TimeoutError:
            log.error("smtp_listener_killed", pid=listener.process.pid, after_seconds=timeout)
            with contextlib.suppress(ProcessLookupError):
                listener.process.kill()
            await listener.process.wait()
        self._forget(listener)


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address `host` resolves to, as asyncio would bind them."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    bound: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(smtpd.BACKLOG)
    except OSError:
        for sock in bound:
            sock.close()
        raise
    return bound


class Link:
    """The listener's side of the socket pair: tells the daemon, notices it is gone."""

    def __init__(self, fd: int, gone: Callable[[], None]) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        self.gone = gone
        asyncio.get_running_loop().add_reader(fd, self._readable)

    def poke(self) -> None:
        """A message was accepted: the daemon's rules stage has work."""
        self.send(WAKE)

    def send(self, record: str) -> None:
        """One record to the daemon; called from threads too. With the buffer full the daemon
        is behind and already has a wake-up waiting: a count is lost rather than the door
        blocked. A daemon that is gone is noticed by the reader, on the loop."""
        with contextlib.suppress(OSError):
            self.sock.send(record.encode())

    def _readable(self) -> None:
        try:
            data = self.sock.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.gone()


async def serve(settings: config.Settings, listening_fds: list[int], link_fd: int) -> None:
    """A listener process: the SMTP door on inherited sockets until SIGTERM or the daemon goes."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The daemon reloads its configuration; a listener keeps its own until it is replaced.
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    link = Link(link_fd, stop.set)
    metrics.relay_to(link.send)
    store = open_store(settings.database.url, settings.blob_dir, settings.database.busy_timeout)
    sockets = [socket.socket(fileno=fd) for fd in listening_fds]
    door = await smtpd.start(settings.smtp, store, link.poke, settings.intake, sockets)
    log.info("smtp_listener_ready", pid=os.getpid())
    await stop.wait()
    await door.close(settings.daemon.drain_timeout)
    store.engine.dispose()
    log.info("smtp_listener_stopped", pid=os.getpid())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}")
    parser.add_argument("--config", required=True)
    parser.add_argument("--link-fd", type=int, required=True)
    parser.add_argument("--listen-fd", type=int, action="append", required=True)
    args = parser.parse_args(argv)
    try:
        settings = config.load(args.config)
    except config.ConfigError as exc:
        print(f"gateway smtp listener: config error: {exc}", file=sys.stderr)
        return config.EX_CONFIG
    configure_logging(settings.gateway.log_level, settings.gateway.log_format)
    structlog.contextvars.bind_contextvars(listener=os.getpid())
    asyncio.run(serve(settings, args.listen_fd, args.link_fd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
