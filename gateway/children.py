"""The daemon's child processes, kept as Postfix's master keeps smtpd, cleanup and qmgr.

A Python process uses one core at most, so parts of the daemon can run in processes of their
own: the SMTP listeners (`gateway.intake.smtpd.listeners`) and the rules stage
(`gateway.pipeline.process`). Each child is `python -m <module>` tied to the daemon by a socket pair
of records, both ways: `wake` (there is work: a message accepted, a document queued), `reload`
(the daemon took a new configuration), and metric lines a child relays, so the daemon's
/metrics counts every process. A child that reads end-of-file knows the daemon is gone, even
after a SIGKILL, and stops. The daemon restarts a child that dies, with a growing pause, reports
it not ready meanwhile, and on SIGTERM lets every child drain before it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog

from gateway import config, metrics
from gateway.logging import configure as configure_logging

log = structlog.get_logger(__name__)

# Pause before restarting a child that died: doubles up to the maximum, reset after a calm run.
RESTART_PAUSE = 1.0
RESTART_PAUSE_MAX = 30.0
CALM_RUN = 60.0
# What a child may take beyond the drain timeout to exit before it is killed.
EXIT_GRACE = 5.0
WAKE = "wake"
RELOAD = "reload"
# A datagram holds records one per line, up to this many bytes (what a receiver reads at once).
MAX_DATAGRAM = 4096
# Variables meant for the daemon alone: systemd talks to the main process only.
PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")
# Nice value of threads doing background work (recognition, database) while other processes
# answer SMTP: under CPU pressure a client waiting for its 250 comes first.
BACKGROUND_NICE = 10

# A child's work: settings, its link, inherited descriptors, and an event set when it must stop.
Serve = Callable[[config.Settings, "Link", list[int], asyncio.Event], Coroutine[Any, Any, None]]


@dataclass
class Child:
    """One child process and the daemon's end of its socket pair."""

    process: asyncio.subprocess.Process
    link: socket.socket
    started: float = field(default_factory=time.monotonic)


class ChildPool:
    """The daemon's side: keep `count` children of one module running, restart, stop them."""

    def __init__(
        self,
        name: str,
        module: str,
        count: int,
        settings: config.Settings,
        wake: Callable[[], None],
        fds: Sequence[int] = (),
    ) -> None:
        self.name = name
        self.module = module
        self.count = count
        self.settings = settings
        self.wake = wake
        self.fds = list(fds)
        self.stopping = False
        self.children: list[Child] = []

    async def run(self) -> None:
        """Keep `count` children running until `stop`."""
        await asyncio.gather(*(self._keep(slot) for slot in range(self.count)))

    def serving(self) -> bool:
        """Whether every child is running (a dead one is being restarted)."""
        return not self.stopping and len(self.children) == self.count

    def send(self, record: str) -> None:
        """One record to every running child; called from threads too. With a child's buffer
        full it is behind and already has a wake-up waiting; a child being restarted reads
        its configuration and its work afresh."""
        for child in list(self.children):
            with contextlib.suppress(OSError):
                child.link.send(record.encode())

    async def _keep(self, slot: int) -> None:
        pause = RESTART_PAUSE
        while not self.stopping:
            child = await self._spawn()
            code = await child.process.wait()
            self._forget(child)
            if self.stopping:
                return
            calm = time.monotonic() - child.started > CALM_RUN
            pause = RESTART_PAUSE if calm else min(pause * 2, RESTART_PAUSE_MAX)
            log.error("child_exited", child=self.name, slot=slot, code=code, restart_in=pause)
            await asyncio.sleep(pause)

    async def _spawn(self) -> Child:
        # Records, not a stream: each send arrives whole or, with the buffer full, not at all.
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        command = [sys.executable, "-m", self.module, "--config", self.settings.source]
        command += ["--link-fd", str(theirs.fileno())]
        for fd in self.fds:
            command += ["--fd", str(fd)]
        env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(theirs.fileno(), *self.fds),
                env=env,
            )
        finally:
            theirs.close()
        child = Child(process, ours)
        asyncio.get_running_loop().add_reader(ours.fileno(), self._received, child)
        self.children.append(child)
        log.info("child_started", child=self.name, pid=process.pid)
        return child

    def _received(self, child: Child) -> None:
        try:
            record = child.link.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            record = b""
        if not record:
            asyncio.get_running_loop().remove_reader(child.link.fileno())
            return
        lines = record.decode(errors="replace").split("\n")
        for line in lines:
            if line != WAKE:
                metrics.replay(line)
        if WAKE in lines:
            self.wake()

    def _forget(self, child: Child) -> None:
        """Drop an exited child; both its watcher and `stop` may get here first."""
        if child not in self.children:
            return
        self.children.remove(child)
        asyncio.get_running_loop().remove_reader(child.link.fileno())
        child.link.close()

    async def stop(self, drain_timeout: float) -> None:
        """SIGTERM to every child; they drain like the daemon's own parts, or are killed."""
        self.stopping = True
        running = list(self.children)
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        await asyncio.gather(*(self._reap(c, drain_timeout + EXIT_GRACE) for c in running))

    async def _reap(self, child: Child, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await child.process.wait()
        except TimeoutError:
            log.error("child_killed", child=self.name, pid=child.process.pid, after=timeout)
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
            await child.process.wait()
        self._forget(child)


class Forward(asyncio.Event):
    """An event whose `set` calls a function: hands a part's wake-up to another process where
    the receiving side expects an event (the doors, the rules stage). Safe from any thread
    when the function is."""

    def __init__(self, call: Callable[[], None]) -> None:
        super().__init__()
        self.call = call

    def set(self) -> None:
        self.call()


class Link:
    """The child's side of the socket pair: records both ways, and the daemon's end noticed."""

    def __init__(self, fd: int, gone: Callable[[], None]) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        self.gone = gone
        # What the child does with a record from the daemon; None: it expects none.
        self.received: Callable[[str], None] | None = None
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._loop.add_reader(fd, self._readable)
        self._lock = threading.Lock()
        self._outgoing: list[str] = []

    def poke(self) -> None:
        """There is work for the daemon (a message accepted, a document queued)."""
        self.send(WAKE)

    def send(self, record: str) -> None:
        """One record to the daemon, from any thread. Records sent while the loop is busy
        leave together at its next turn, lines of one datagram, a wake-up once: a burst of
        accepted messages costs the daemon one wake-up, not one per message and per count. From
        the loop's own thread, where most records come from, the flush is scheduled without
        waking the loop through its self-pipe (a write and a read more per message)."""
        with self._lock:
            first = not self._outgoing
            if record != WAKE or WAKE not in self._outgoing:
                self._outgoing.append(record)
        if not first:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the child is ending
            if threading.get_ident() == self._loop_thread:
                self._loop.call_soon(self._flush)
            else:
                self._loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        """With the buffer full the daemon is behind and already has a wake-up waiting: a
        count is lost rather than the child blocked. A daemon that is gone is noticed by the
        reader."""
        with self._lock:
            records, self._outgoing = self._outgoing, []
        for datagram in _datagrams(records):
            with contextlib.suppress(OSError):
                self.sock.send(datagram)

    def _readable(self) -> None:
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.gone()
        elif self.received is not None:
            for line in data.decode(errors="replace").split("\n"):
                self.received(line)


def _datagrams(records: list[str]) -> Iterator[bytes]:
    """`records` as lines, as few datagrams as `MAX_DATAGRAM` allows."""
    lines: list[bytes] = []
    size = 0
    for record in records:
        line = record.encode()[:MAX_DATAGRAM]
        if lines and size + len(line) > MAX_DATAGRAM:
            yield b"\n".join(lines)
            lines, size = [], 0
        lines.append(line)
        size += len(line) + 1
    if lines:
        yield b"\n".join(lines)


def lower_background_priority() -> None:
    """Run the loop's default executor, where recognition and database work go, at a lower
    priority; the loop thread keeps its own."""
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(thread_name_prefix="background", initializer=_lower_priority)
    )


def _lower_priority() -> None:
    """Linux keeps a nice value per thread: this lowers the calling thread's only."""
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


async def _live(settings: config.Settings, link_fd: int, fds: list[int], serve: Serve) -> None:
    """A child's life: `serve` runs until SIGTERM or until the daemon is gone, then drains as
    it sees fit and returns. SIGHUP is the daemon's: a child takes a new configuration when
    the daemon sends `reload`, or when it is replaced."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    link = Link(link_fd, stop.set)
    metrics.relay_to(link.send)
    await serve(settings, link, fds, stop)


def main(module: str, tag: str, serve: Serve, argv: list[str] | None = None) -> int:
    """`python -m <module>` as the daemon starts it: its configuration, link and inherited
    descriptors from the command line; its logs carry `tag=<pid>`."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}")
    parser.add_argument("--config", required=True)
    parser.add_argument("--link-fd", type=int, required=True)
    parser.add_argument("--fd", type=int, action="append", default=[])
    args = parser.parse_args(argv)
    try:
        settings = config.load(args.config)
    except config.ConfigError as exc:
        print(f"gateway {tag}: config error: {exc}", file=sys.stderr)
        return config.EX_CONFIG
    configure_logging(settings.gateway.log_level, settings.gateway.log_format)
    structlog.contextvars.bind_contextvars(**{tag: os.getpid()})
    asyncio.run(_live(settings, args.link_fd, args.fd, serve))
    return 0
