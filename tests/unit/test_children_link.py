"""A child's link to the daemon: records sent in one turn of the loop leave as one datagram of
lines, with one wake-up, and nothing is cut or lost on the way."""

from __future__ import annotations

import asyncio
import socket
import threading

from gateway import children


def test_a_burst_leaves_as_one_datagram_with_one_wake_up() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    async def burst() -> None:
        link = children.Link(theirs.fileno(), lambda: None)
        for n in range(20):
            link.send(f"received smtp 0.{n:06d}")
            link.poke()
        from_thread = threading.Thread(target=link.send, args=("refused smtp 550",))
        from_thread.start()
        from_thread.join()
        await asyncio.sleep(0.1)

    with ours:
        asyncio.run(burst())
        ours.setblocking(False)
        datagrams = []
        while True:
            try:
                datagram = ours.recv(children.MAX_DATAGRAM)
            except BlockingIOError:
                break
            if not datagram:  # the child's end is closed once its loop is gone
                break
            datagrams.append(datagram)
    lines = [line.decode() for d in datagrams for line in d.split(b"\n")]
    assert len(datagrams) == 1
    assert lines.count(children.WAKE) == 1
    assert [x for x in lines if x.startswith("received")] == [
        f"received smtp 0.{n:06d}" for n in range(20)
    ]
    assert "refused smtp 550" in lines


def test_records_beyond_one_datagram_are_split_between_lines() -> None:
    records = [f"received smtp {n:0100d}" for n in range(200)]
    datagrams = list(children._datagrams(records))
    assert len(datagrams) > 1
    assert all(len(d) <= children.MAX_DATAGRAM for d in datagrams)
    assert [line.decode() for d in datagrams for line in d.split(b"\n")] == records


def test_from_the_loop_thread_no_self_pipe_wake_up_from_another_thread_one() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    woken: list[str] = []

    async def both() -> float:
        loop = asyncio.get_running_loop()
        threadsafe = loop.call_soon_threadsafe

        def counted(callback, *args, **kwargs):  # type: ignore[no-untyped-def]
            woken.append(threading.current_thread().name)
            return threadsafe(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        link = children.Link(theirs.fileno(), lambda: None)
        link.send("received smtp 0.1")
        await asyncio.sleep(0.05)
        assert ours.recv(children.MAX_DATAGRAM) == b"received smtp 0.1"
        started = loop.time()
        threading.Thread(target=link.send, args=("refused smtp 550",), name="other").start()
        await loop.sock_recv(ours, children.MAX_DATAGRAM)
        return loop.time() - started

    with ours:
        ours.setblocking(False)
        waited = asyncio.run(both())
    assert woken == ["other"]
    assert waited < 1.0
