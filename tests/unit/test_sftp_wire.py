"""The SFTP connection's transport: what asyncssh writes in one turn of the loop leaves in one
send, in order, and nothing written before a close is lost."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.outbound.sftp_wire import MSG_IGNORE, GatheringTransport, drop_empty_ignores


class Recorded(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.sent.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted


def test_writes_of_one_turn_leave_in_one_send_in_order() -> None:
    async def scenario() -> list[bytes]:
        inner = Recorded()
        transport = GatheringTransport(inner)
        for packet in (b"ignore-1", b"open", b"ignore-2", b"write"):
            transport.write(packet)
        assert inner.sent == []
        await asyncio.sleep(0)
        transport.write(b"next-turn")
        await asyncio.sleep(0)
        return inner.sent

    assert asyncio.run(scenario()) == [b"ignore-1openignore-2write", b"next-turn"]


def test_a_close_sends_what_was_written_first_and_an_abort_drops_it() -> None:
    async def scenario() -> tuple[Recorded, Recorded]:
        closing, aborting = Recorded(), Recorded()
        first, second = GatheringTransport(closing), GatheringTransport(aborting)
        first.write(b"disconnect")
        first.close()
        second.write(b"lost")
        second.abort()
        await asyncio.sleep(0)
        return closing, aborting

    closing, aborting = asyncio.run(scenario())
    assert (closing.sent, closing.closed) == ([b"disconnect"], True)
    assert (aborting.sent, aborting.aborted) == ([], True)


class Session:
    def __init__(self) -> None:
        self.sent: list[tuple[int, tuple[bytes, ...], dict[str, Any]]] = []

    def send_packet(self, pkttype: int, *args: bytes, **kwargs: Any) -> None:
        self.sent.append((pkttype, args, kwargs))


def test_only_empty_ignore_packets_are_dropped() -> None:
    session = Session()
    drop_empty_ignores(session)
    session.send_packet(MSG_IGNORE, b"\x00\x00\x00\x00")
    session.send_packet(MSG_IGNORE, b"\x00\x00\x00\x01", b"x")
    session.send_packet(94, b"\x00\x00\x00\x00", handler="channel")
    assert session.sent == [
        (MSG_IGNORE, (b"\x00\x00\x00\x01", b"x"), {}),
        (94, (b"\x00\x00\x00\x00",), {"handler": "channel"}),
    ]


def test_a_session_without_send_packet_is_left_alone() -> None:
    session = object()
    drop_empty_ignores(session)
    assert not hasattr(session, "send_packet")
