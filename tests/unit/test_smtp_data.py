"""The streaming DATA command on a real aiosmtpd server over loopback, driven byte by byte.

The handler here only records what it was given (the store is tested elsewhere): what matters
is how the protocol frames, checks and answers, and that nothing stays in the spool.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import smtplib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.intake.accept import read_head
from gateway.intake.smtpd import checks
from gateway.intake.smtpd.data_decoder import DataDecoder, Piece
from gateway.intake.smtpd.smtp_data import StreamingSMTP
from gateway.intake.spool import FLUSH_SIZE, SpoolFile

TIMEOUT = 20.0


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: object
    ) -> str:
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_SPOOLED(
        self, server: SMTP, session: Session, envelope: Envelope, spool: SpoolFile
    ) -> str:
        assert not spool.on_disk or spool.size >= FLUSH_SIZE  # small ones wait for `finish`
        head = spool.head
        spooled = await asyncio.to_thread(spool.finish)
        data = spooled.path.read_bytes()
        assert data.startswith(head) and head == read_head(spooled.path)
        spooled.path.unlink()  # the handler owns the file: adopting it, or here dropping it
        assert len(data) == spooled.size
        assert hashlib.sha256(data).hexdigest() == spooled.sha256
        self.messages.append((envelope.mail_from or "", data))
        return f"250 2.0.0 Ok: queued as {len(self.messages)}"


Conversation = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run_server(spool: Path, conversation: Conversation, max_size: int = 10_000_000) -> Recorder:
    recorder = Recorder()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: StreamingSMTP(recorder, spool_dir=spool, data_size_limit=max_size),
            "127.0.0.1",
            0,
        )
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.wait_for(conversation(reader, writer), TIMEOUT)
            writer.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())
    return recorder


async def replies(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    """The next `count` replies, each the last line of a possibly multi-line reply."""
    got: list[bytes] = []
    while len(got) < count:
        line = await reader.readline()
        assert line, f"connection closed after {got}"
        if line[3:4] != b"-":
            got.append(line.rstrip(b"\r\n"))
    return got


async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await replies(reader, 1)
    writer.write(b"EHLO client.example\r\n")
    assert (await replies(reader, 1))[0].startswith(b"250")


async def trickle(writer: asyncio.StreamWriter, data: bytes, step: int) -> None:
    """Send `data` in `step`-byte writes, letting each reach the server on its own."""
    for i in range(0, len(data), step):
        writer.write(data[i : i + step])
        await writer.drain()
        await asyncio.sleep(0.0005)


def test_a_message_trickled_byte_by_byte_arrives_unstuffed(tmp_path: Path) -> None:
    body = b"Subject: t\r\n\r\n.leading dot\r\n..\r\nend.\r\n.\r\n"

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hello(reader, writer)
        writer.write(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        assert (await replies(reader, 3))[2].startswith(b"354")
        await trickle(writer, body, 1)
        assert (await replies(reader, 1))[0].startswith(b"250 2.0.0")

    recorder = run_server(tmp_path, talk)
    assert recorder.messages == [
        ("a@example.com", b"Subject: t\r\n\r\nleading dot\r\n.\r\nend.\r\n")
    ]
    assert list(tmp_path.iterdir()) == []


def test_commands_pipelined_after_the_data_are_answered_in_order(tmp_path: Path) -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hello(reader, writer)
        writer.write(
            b"MAIL FROM:<one@x>\r\nRCPT TO:<r@x>\r\nDATA\r\n"
            b"first\r\n.\r\nMAIL FROM:<two@x>\r\nRCPT TO:<r@x>\r\nDATA\r\n"
            b"second\r\n.\r\nNOOP\r\nQUIT\r\n"
        )
        codes = [r[:3] for r in await replies(reader, 10)]
        assert codes == b"250 250 354 250 250 250 354 250 250 221".split()

    recorder = run_server(tmp_path, talk)
    assert recorder.messages == [("one@x", b"first\r\n"), ("two@x", b"second\r\n")]


def test_lines_ending_in_full_stops_are_decoded_in_whole_blocks_not_line_by_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = b"Subject: prose\r\n\r\n" + b"Please find the invoice attached.\r\n" * 20_000
    blocks: list[int] = []
    feed = DataDecoder.feed

    def counted(self: DataDecoder, chunk: bytes) -> tuple[list[Piece], bytes]:
        blocks.append(len(chunk))
        return feed(self, chunk)

    monkeypatch.setattr(DataDecoder, "feed", counted)

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hello(reader, writer)
        writer.write(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n")
        await replies(reader, 3)
        writer.write(body + b".\r\nNOOP\r\n")
        queued, noop = await replies(reader, 2)
        assert queued.startswith(b"250 2.0.0") and noop.startswith(b"250")

    assert run_server(tmp_path, talk).messages == [("a@x", body)]
    assert sum(blocks) >= len(body)
    assert len(blocks) < 100  # a block per receive, not one per line (20,000)


def test_a_smuggled_message_is_one_refused_message_not_two(tmp_path: Path) -> None:
    smuggled = (
        b"Subject: hi\r\n\r\nhello\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@x>\r\n"
        b"DATA\r\nSubject: forged\r\n\r\nforged\r\n.\r\nNOOP\r\n"
    )

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hello(reader, writer)
        writer.write(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n")
        await replies(reader, 3)
        await trickle(writer, smuggled, 7)
        refused, noop = await replies(reader, 2)
        assert refused == checks.BARE_LINE_ENDING.encode()
        assert noop.startswith(b"250")

    recorder = run_server(tmp_path, talk)
    assert recorder.messages == []
    assert list(tmp_path.iterdir()) == []


def test_too_big_is_552_after_the_whole_message_and_the_session_goes_on(tmp_path: Path) -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hello(reader, writer)
        writer.write(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n")
        await replies(reader, 3)
        writer.write((b"x" * 70 + b"\r\n") * 20_000 + b".\r\nRSET\r\n")
        too_big, rset = await replies(reader, 2)
        assert too_big == checks.TOO_BIG.encode()
        assert rset.startswith(b"250")

    recorder = run_server(tmp_path, talk, max_size=100_000)
    assert recorder.messages == []
    assert list(tmp_path.iterdir()) == []


def test_an_overlong_line_is_refused(tmp_path: Path) -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hello(reader, writer)
        writer.write(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n")
        await replies(reader, 3)
        writer.write(b"ok\r\n" + b"L" * 5000 + b"\r\n.\r\nNOOP\r\n")
        refused, noop = await replies(reader, 2)
        assert refused == checks.LINE_TOO_LONG.encode()
        assert noop.startswith(b"250")

    assert run_server(tmp_path, talk).messages == []


def test_data_without_recipients_or_with_an_argument_is_refused(tmp_path: Path) -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hello(reader, writer)
        writer.write(b"MAIL FROM:<a@x>\r\nDATA\r\nRCPT TO:<b@x>\r\nDATA now\r\n")
        codes = [r[:3] for r in await replies(reader, 4)]
        assert codes == [b"250", b"503", b"250", b"501"]

    assert run_server(tmp_path, talk).messages == []


def test_a_connection_dropped_mid_data_leaves_nothing_in_the_spool(tmp_path: Path) -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hello(reader, writer)
        writer.write(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n")
        await replies(reader, 3)
        writer.write(b"half a message\r\n" * 1000)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()
        await writer.wait_closed()
        for _ in range(200):
            if not list(tmp_path.iterdir()):
                return
            await asyncio.sleep(0.01)

    assert run_server(tmp_path, talk).messages == []
    assert list(tmp_path.iterdir()) == []


def test_smtplib_sends_five_megabytes_intact(tmp_path: Path) -> None:
    attachment = os.urandom(2_500_000).hex().encode()
    lines = [attachment[i : i + 76] for i in range(0, len(attachment), 76)]
    body = b"Subject: big\r\n\r\n" + b"\r\n".join(b"." + line for line in lines[:50])
    body += b"\r\n" + b"\r\n".join(lines[50:]) + b"\r\n"

    recorder = Recorder()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: StreamingSMTP(recorder, spool_dir=tmp_path), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        try:
            await asyncio.wait_for(asyncio.to_thread(_send_with_smtplib, port, body), TIMEOUT)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())
    assert recorder.messages == [("a@example.com", body)]


def _send_with_smtplib(port: int, body: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
        client.sendmail("a@example.com", ["b@example.com"], body)


def test_a_full_disk_mid_data_is_452_after_the_whole_message_and_the_session_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: SpoolFile) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SpoolFile, "flush", full)

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hello(reader, writer)
        writer.write(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n")
        await replies(reader, 3)
        writer.write((b"x" * 70 + b"\r\n") * 20_000 + b".\r\nNOOP\r\n")
        no_room, noop = await replies(reader, 2)
        assert no_room == checks.NO_ROOM.encode()
        assert noop.startswith(b"250")

    assert run_server(tmp_path, talk).messages == []
    assert list(tmp_path.iterdir()) == []
