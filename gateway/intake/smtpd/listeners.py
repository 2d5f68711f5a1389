"""SMTP listener processes on one listening socket: the door on more than one core.

A Python process answers SMTP on one core at most, and the daemon's own process also runs the
rules stage and the workers. With `smtp.processes = N` above 1, the daemon binds the socket and
keeps N children (`gateway.children`) that accept on it and run nothing but the SMTP door, as
Postfix's master binds port 25 for its smtpd processes; the daemon's own core is left to the
rules stage and the workers. The kernel gives each connection to a process that is waiting in
accept, so a busy one takes fewer. They share the database and the blob store; each commits its
own groups, and after every accepted message sends `wake` to the daemon, which starts the
rules stage at once.

A listener leaves what its start-up made out of the garbage collector's full collections
(`settle_heap`).
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import sys
from collections.abc import Callable

import structlog

from gateway import children, config
from gateway.intake.smtpd import door as smtpd
from gateway.store.db import open_store

log = structlog.get_logger(__name__)

NAME = "smtp-listener"


def pool(settings: config.Settings, fds: list[int], wake: Callable[[], None]) -> children.ChildPool:
    """`smtp.processes` listeners accepting on the daemon's listening descriptors `fds`."""
    return children.ChildPool(NAME, __name__, settings.smtp.processes, settings, wake, fds)


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


async def serve(
    settings: config.Settings, link: children.Link, fds: list[int], stop: asyncio.Event
) -> None:
    """A listener process: the SMTP door on inherited sockets until it must stop; a new
    configuration takes a new listener."""
    store = open_store(settings.database.url, settings.blob_dir, settings.database.busy_timeout)
    sockets = [socket.socket(fileno=fd) for fd in fds]
    door = await smtpd.start(settings.smtp, store, link.poke, settings.intake, sockets)
    settle_heap()
    log.info("smtp_listener_ready", pid=os.getpid())
    await stop.wait()
    await door.close(settings.daemon.drain_timeout)
    store.engine.dispose()
    log.info("smtp_listener_stopped", pid=os.getpid())


def settle_heap() -> None:
    """Move every object alive now to the collector's permanent generation (`gc.freeze`),
    once start-up's own garbage is collected.

    What a started listener holds (modules, settings, the database engine: ~100,000 objects)
    lives as long as the process, yet a full collection walks all of it: under load one came
    about every thousand messages and took ~70 ms of CPU, every session held up meanwhile.
    Frozen, they are not walked; the sessions' own objects are collected as before.
    """
    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    sys.exit(children.main(__name__, "listener", serve))
