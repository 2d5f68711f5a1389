"""The recorded headers read without the header registry are the registry's, to the byte, and
header blocks split without the e-mail package's parser are the parser's."""

from __future__ import annotations

import random
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from gateway import mime
from gateway.mime import message, plain_headers

ATEXT = "aZ9!#$%&'*+/=?^_`{|}~-"
NOISE = "aZ9.@<> \t\"(),:;[]\\=?-_'ü"
PLAIN = [
    b"From: <a@b.c>\r\nMessage-Id: <33c5.0003.0000@vm>\r\n\r\n",
    b"From: Jane Doe <jane.doe@example.com>\r\nSubject: Invoice 42\r\nMessage-ID: <x.y@z>\r\n\r\n",
    b"Subject: folded\r\n\tover two lines\r\nFrom: a@b\r\n\r\n",
    b"From: a@b\r\nFrom: c@d\r\nSubject:\r\n\r\n",
    b"To: nobody@x\r\n\r\n",
]
NOT_PLAIN = [
    b'From: "Doe, Jane" <jane@example.com>\r\n\r\n',
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\n",
    b"From: a@b, c@d\r\n\r\n",
    b"From: Jane  Doe <jane@example.com>\r\n\r\n",
    b"Message-ID: <no at sign>\r\n\r\n",
    "Subject: caf\u00e9\r\n\r\n".encode(),
]


# Bytes that change how a header block splits into fields when put anywhere in it, and control
# characters that `str.splitlines` would take for line breaks (the parser does not).
STRUCTURE = [
    "\n",
    "\r",
    "\r\n",
    "\r\n ",
    "\r\n\t",
    " ",
    "\t",
    ":",
    "From ",
    "\r\n\r\n",
    "\u00fc",
    "\x00",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x85",
]


def outcome(raw: bytes, read: object) -> object:
    message = mime.parse(raw, headers_only=True)
    try:
        return read(message)  # type: ignore[operator]
    except Exception as exc:
        return type(exc)


def generated(count: int) -> Iterator[bytes]:
    """Header blocks of From, Message-ID and Subject, plain or broken at one random place."""
    rng = random.Random(5)

    def word(alphabet: str) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))

    for _ in range(count):
        address = f"{word(ATEXT + '.')}@{word(ATEXT + '.')}"
        name = " ".join(word(ATEXT) for _ in range(rng.randint(1, 3)))
        values = [
            f"<{address}>",
            address,
            f"{name} <{address}>",
            f" {name}  <{address}> ",
            f"<{address}>\r\n\t",
            name,
        ]
        lines = []
        for header in ("From", "Message-ID", "Subject"):
            value = rng.choice(values)
            if rng.random() < 0.3:
                at = rng.randrange(len(value))
                value = value[:at] + rng.choice(NOISE) + value[at + rng.randint(0, 1) :]
            lines.append(f"{header}: {value}\r\n")
        rng.shuffle(lines)
        yield ("".join(lines) + "\r\n").encode("utf-8", "surrogateescape")


def parsed(raw: bytes) -> object:
    """What the door recorded before `plain_headers.read`: the parser, then the registry."""
    return outcome(raw, mime.headers)


def read(raw: bytes) -> object:
    try:
        return plain_headers.read(raw)
    except Exception as exc:
        return type(exc)


def parsed_fields(raw: bytes) -> list[tuple[str, str]]:
    return [(k, str(v)) for k, v in mime.parse(raw, headers_only=True).raw_items()]


def restructured(blocks: list[bytes]) -> Iterator[bytes]:
    """`blocks` with line breaks, blanks, colons, envelope lines, non-ASCII or a body put in at
    random places, or their final empty line taken away."""
    rng = random.Random(7)
    for raw in blocks:
        text = raw.decode("utf-8", "surrogateescape")
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text) + 1)
            text = text[:at] + rng.choice(STRUCTURE) + text[at:]
        if rng.random() < 0.1:
            text = text.rstrip("\r\n")
        if rng.random() < 0.1:
            text += "body: not a header\r\n\r\nmore\r\n"
        yield text.encode("utf-8", "surrogateescape")


@pytest.mark.parametrize("raw", [*PLAIN, *NOT_PLAIN])
def test_known_header_blocks_read_as_the_registry_reads_them(raw: bytes) -> None:
    assert outcome(raw, plain_headers.headers) == outcome(raw, mime.headers)


def test_generated_header_blocks_read_as_the_registry_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = mime.headers
    asked = []

    def counted(message: EmailMessage) -> mime.Headers:
        asked.append(1)
        return registry(message)

    monkeypatch.setattr(message, "headers", counted)
    blocks = list(generated(3000))
    for raw in blocks:
        assert outcome(raw, plain_headers.headers) == outcome(raw, registry), raw
    assert 200 < len(blocks) - len(asked) < len(blocks)  # both ways were taken, often


def test_plain_header_blocks_never_reach_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = [outcome(raw, mime.headers) for raw in PLAIN]

    def refuse(message: object) -> mime.Headers:
        raise AssertionError("registry used")

    monkeypatch.setattr(message, "headers", refuse)
    assert [outcome(raw, plain_headers.headers) for raw in PLAIN] == expected
    assert all(outcome(raw, plain_headers.headers) is AssertionError for raw in NOT_PLAIN)


@pytest.mark.parametrize("raw", [*PLAIN, *NOT_PLAIN])
def test_known_header_blocks_read_from_bytes_as_the_parser_and_registry_read_them(
    raw: bytes,
) -> None:
    assert read(raw) == parsed(raw)


def test_generated_header_blocks_split_and_read_as_the_parser_reads_them() -> None:
    blocks = [*generated(1000), *PLAIN, *NOT_PLAIN]
    blocks += list(restructured(blocks))
    split = 0
    for raw in blocks:
        assert read(raw) == parsed(raw), raw
        assert mime.header_values(raw, "from") == [
            v for k, v in parsed_fields(raw) if k.lower() == "from"
        ], raw
        fields = message.plain_fields(raw)
        if fields is not None:
            assert fields == parsed_fields(raw), raw
            split += 1
    assert 200 < len(blocks) - split < len(blocks) - 200  # both ways were taken, often


def test_plain_header_blocks_never_reach_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = [parsed(raw) for raw in PLAIN]

    def refuse(raw: bytes, headers_only: bool = False) -> EmailMessage:
        raise AssertionError("parser used")

    monkeypatch.setattr(message, "parse", refuse)
    assert [plain_headers.read(raw) for raw in PLAIN] == expected
