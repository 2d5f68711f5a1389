"""The lean aiosmtpd protocol finds what stock aiosmtpd finds and parses addresses the same."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Session

from gateway.intake.smtpd.lean import SCANNED_PREFIXES, LeanSMTP
from gateway.intake.smtpd.smtp_data import StreamingSMTP

PLAIN = [
    "<a@b.c>",
    "<bench@gateway.localhost> SIZE=60000",
    "<First.Last+tag@Example.ORG>  BODY=8BITMIME SIZE=1",
    "<a@b.c>SIZE=1",
    "<a@b.c>\tSIZE=1",
    "<o'neil!#$%&*/=^?_`{|}~-@x-y.z>",
]
OTHER = [
    "<>",
    "a@b.c",
    "<@relay.example:a@b.c>",
    '<"quoted local"@b.c>',
    "<a@b.c> (comment) SIZE=1",
    "<a@b.c>(comment)",
    "<üser@bücher.example> SMTPUTF8",
    "<=?utf-8?q?x?=@b.c>",
    "<a..b@c>",
    "<.a@c>",
    "<a@[127.0.0.1]>",
    "<a@b.c",
    "<a b@c>",
    " <a@b.c>",
    "<a@b.c.>",
]
ALPHABET = 'ab.@<>"()[]:;, \t=?+-_~üZ9\\'
ATEXT = "aZ9.!#$%&'*+/=?^_`{|}~-"


class Hooks:
    async def handle_RCPT(self, *args: object) -> str:
        return "250 OK"


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def both(loop: asyncio.AbstractEventLoop, limit: int = 0) -> tuple[LeanSMTP, SMTP]:
    lean, stock = LeanSMTP(Hooks(), loop=loop), SMTP(Hooks(), loop=loop)
    lean.local_part_limit = stock.local_part_limit = limit
    return lean, stock


def generated(count: int) -> Iterator[str]:
    """Address-like arguments, half of them then broken at one random place."""
    rng = random.Random(8)
    for _ in range(count):
        local = "".join(rng.choice(ATEXT) for _ in range(rng.randint(1, 8)))
        domain = "".join(rng.choice(ATEXT) for _ in range(rng.randint(1, 8)))
        tail = rng.choice(["", " SIZE=1", "  x", "(c)", " (c) x", "\tBODY=7BIT", " "])
        arg = f"<{local}@{domain}>{tail}"
        if rng.random() < 0.5:
            at = rng.randrange(len(arg))
            arg = arg[:at] + rng.choice(ALPHABET) + arg[at + rng.randint(0, 1) :]
        yield arg


@pytest.mark.parametrize("limit", [0, 4])
def test_addresses_parse_exactly_as_aiosmtpd_parses_them(
    loop: asyncio.AbstractEventLoop, limit: int
) -> None:
    lean, stock = both(loop, limit)
    for arg in [*PLAIN, *OTHER, *generated(3000)]:
        assert outcome(lean, arg) == outcome(stock, arg), arg


def outcome(protocol: SMTP, arg: str) -> object:
    """The parse, or the kind of exception: aiosmtpd's parser raises on some garbage."""
    try:
        return protocol._getaddr(arg)
    except Exception as exc:
        return type(exc)


def test_plain_addresses_never_reach_the_header_parser(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    lean, _ = both(loop)
    expected = {arg: lean._getaddr(arg) for arg in PLAIN}

    def refuse(self: SMTP, arg: str) -> tuple[str | None, str | None]:
        raise AssertionError(f"slow path for {arg!r}")

    monkeypatch.setattr(SMTP, "_getaddr", refuse)
    assert {arg: lean._getaddr(arg) for arg in PLAIN} == expected
    with pytest.raises(AssertionError):
        lean._getaddr(OTHER[0])


def test_the_scan_finds_every_verb_mechanism_and_hook(
    loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    protocol = StreamingSMTP(Hooks(), spool_dir=tmp_path, loop=loop)
    names = set(object.__dir__(protocol))
    assert set(dir(protocol)) == {n for n in names if n.startswith(SCANNED_PREFIXES)}
    assert set(protocol._smtp_methods) == {n[5:] for n in names if n.startswith("smtp_")}
    assert set(protocol._auth_methods) == {"LOGIN", "PLAIN"}
    assert set(protocol._handle_hooks) == {"RCPT"}
    assert protocol._smtp_methods["DATA"] == protocol.smtp_DATA


class Clock:
    """A loop clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_activity_moves_the_idle_deadline_and_the_timer_closes_only_past_it(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(loop, "time", clock)
    lean = LeanSMTP(Hooks(), loop=loop, timeout=300)
    closed: list[float] = []
    monkeypatch.setattr(lean, "_timeout_cb", lambda: closed.append(clock.now))
    lean._reset_timeout()
    timer = lean._timeout_handle
    assert timer is not None and timer.when() == 1300.0
    clock.now = 1100.0
    lean._reset_timeout()  # a command: the deadline moves, the timer stays
    assert lean._timeout_handle is timer and lean._deadline == 1400.0
    clock.now = 1300.0
    lean._idle_timer()  # fires early: sleeps again until the deadline
    assert closed == [] and lean._timeout_handle is not timer
    assert lean._timeout_handle is not None and lean._timeout_handle.when() == 1400.0
    clock.now = 1400.0
    lean._idle_timer()
    assert closed == [1400.0]


def test_a_shorter_idle_limit_brings_the_timer_forward(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(loop, "time", clock)
    lean = LeanSMTP(Hooks(), loop=loop, timeout=300)
    lean._reset_timeout()
    lean._reset_timeout(5)
    assert lean._timeout_handle is not None and lean._timeout_handle.when() == 1005.0


class Writes:
    """A stream writer that records what each write sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    async def drain(self) -> None:
        return None


def test_a_multi_line_reply_leaves_in_one_write_with_its_last_line(
    loop: asyncio.AbstractEventLoop,
) -> None:
    lean = LeanSMTP(Hooks(), loop=loop)
    lean.session = Session(loop)
    writes = Writes()
    lean._writer = writes  # type: ignore[assignment]

    async def replies() -> None:
        for line in ["250-gateway", "250-SIZE 10", "250 HELP", "250 2.1.0 Ok"]:
            await lean.push(line)
        await lean.push("250-a")
        await lean.push(b"250 b")

    loop.run_until_complete(replies())
    assert writes.sent == [
        b"250-gateway\r\n250-SIZE 10\r\n250 HELP\r\n",
        b"250 2.1.0 Ok\r\n",
        b"250-a\r\n250 b\r\n",
    ]


def test_the_ehlo_reply_is_stock_aiosmtpd_s_to_the_byte(loop: asyncio.AbstractEventLoop) -> None:
    sent = []
    for protocol in both(loop):
        protocol.session = Session(loop)
        protocol._writer = writes = Writes()  # type: ignore[assignment]
        loop.run_until_complete(protocol.smtp_EHLO("client.example"))
        sent.append(b"".join(writes.sent))
    assert sent[0] == sent[1]
    assert sent[0].count(b"\r\n") > 3
