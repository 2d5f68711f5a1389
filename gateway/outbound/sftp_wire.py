"""An SFTP connection's bytes leave in one send per turn of the event loop, not one per packet.

asyncssh hands every SSH packet to its transport as soon as it is built, so a file's five SFTP
requests (open; write and fsync; close and rename) cost five send calls, each waking sshd.
Gathering what asyncssh writes in one turn of the loop and sending it at the end of that turn
makes it three, one per round trip, with the same bytes in the same order.

The hook is asyncssh's own `tunnel` argument: any object with `create_connection` that opens
the connection the SSH session runs over (as an SSH connection does for a tunnel). `DirectTcp`
opens a plain TCP connection, as asyncssh would, and gives the session a `GatheringTransport`
over it.

The same hook holds the SSH session before its first packet, and `drop_empty_ignores` stops
there the empty SSH_MSG_IGNORE packet asyncssh sends before every other once encrypted (which
would double the packets above): a countermeasure against attacks on CBC ciphers, with no
option to turn it off. `sftp.CIPHERS` offers no CBC cipher, so it protects nothing here, yet
each costs building, encrypting and logging a packet on our side and decrypting and discarding
it on the server's, as much as the packet it precedes. That one wrapped method is the only
thing of asyncssh's this module changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

# SSH_MSG_IGNORE (RFC 4253, 11.2) and an SSH string of no bytes: the countermeasure's packet.
MSG_IGNORE = 2
_EMPTY_STRING = b"\x00\x00\x00\x00"


class GatheringTransport(asyncio.Transport):
    """Writes kept until the end of the loop's current turn, then sent together."""

    def __init__(self, inner: asyncio.Transport) -> None:
        super().__init__()
        self._inner = inner
        self._pending: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._inner.is_closing():
            self._inner.write(b"".join(pending))

    def close(self) -> None:
        self._flush()  # what was written before the close still leaves, as with asyncio's own
        self._inner.close()

    def abort(self) -> None:
        self._pending.clear()
        self._inner.abort()

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size() + sum(map(len, self._pending))

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._inner.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._inner.can_write_eof()

    def write_eof(self) -> None:
        self._flush()
        self._inner.write_eof()

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def is_reading(self) -> bool:
        return self._inner.is_reading()


class _Relay(asyncio.Protocol):
    """The socket's protocol: passes everything to the SSH session, which writes through a
    `GatheringTransport`."""

    def __init__(self, session: asyncio.Protocol) -> None:
        self._session = session

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._session.connection_made(GatheringTransport(transport))

    def data_received(self, data: bytes) -> None:
        self._session.data_received(data)

    def eof_received(self) -> bool | None:
        return self._session.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._session.connection_lost(exc)

    def pause_writing(self) -> None:
        self._session.pause_writing()

    def resume_writing(self) -> None:
        self._session.resume_writing()


class DirectTcp:
    """For asyncssh's `tunnel` argument: a direct TCP connection with gathered writes."""

    async def create_connection(
        self, session_factory: Callable[[], asyncio.Protocol], remote_host: str, remote_port: int
    ) -> tuple[asyncio.Transport, asyncio.Protocol]:
        session = session_factory()
        drop_empty_ignores(session)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(
            lambda: _Relay(session), remote_host, remote_port
        )
        return transport, session

    def close(self) -> None:
        """Nothing to close: the connection closes with its SSH session."""

    async def wait_closed(self) -> None:
        """Nothing to wait for, as `close`."""


def drop_empty_ignores(session: Any) -> None:
    """Make `session` (an asyncssh connection) send every packet but an empty SSH_MSG_IGNORE.

    This wraps asyncssh's `send_packet` on this one instance, an internal method: asyncssh
    sends the countermeasure's packet through `self.send_packet`, so the wrapper sees it and
    nothing else changes; every other packet, an IGNORE with content included, goes through
    untouched. A future asyncssh without the method keeps its own behaviour.
    """
    send = getattr(session, "send_packet", None)
    if send is None:
        return

    def send_packet(pkttype: int, *args: bytes, **kwargs: Any) -> None:
        if pkttype != MSG_IGNORE or args != (_EMPTY_STRING,):
            send(pkttype, *args, **kwargs)

    session.send_packet = send_packet
