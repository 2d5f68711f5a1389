"""A part's header block read without the header registry answers as the email package does.

Thousands of generated blocks, plain and not (RFC 2231 and 2047 names, comments, escapes,
broken quotes, 8-bit bytes, folding, odd line ends), are asked every question taking a part
apart asks, of `mime.head.parse_head` and of the email package with `policy.default`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from email import policy
from email.message import Message
from email.parser import BytesParser
from typing import Any

from gateway.mime.head import PlainHeaders, parse_head

TYPES = ["text/plain", "TEXT/Html", "application/pdf", "multipart/mixed", "message/rfc822"]
ODD_TYPES = ["text", "text/", "a/b/c", "", " ", "application/x-pdf (scan)", "image/png;"]
DISPOSITIONS = ["attachment", "inline", "Attachment", "form-data", ""]
NAMES = ["filename", "name", "boundary", "charset", "Name", "FILENAME", "size"]
VALUES = [
    "a.pdf",
    '"a b.pdf"',
    '"factuur (1).pdf"',
    '"x;y=z.pdf"',
    '"<a.pdf>"',
    '"===============0123456789=="',
    "utf-8",
    '""',
    "'quoted'",
    "a{b}|~",
    "a*b",
    "%41.pdf",
    '"it\'s.pdf"',
]
ODD_VALUES = [
    '"=?UTF-8?B?ZmFjdHV1ci5wZGY=?="',
    "=?utf-8?q?f=C3=A9?=",
    '"a\\"b.pdf"',
    '"unterminated',
    "a b",
    '"caf\udce9.pdf"',
    "(comment)x.pdf",
    '"a\tb"',
]
ODD_PARAMS = [
    "filename*=UTF-8''caf%C3%A9.pdf",
    "filename*0=a; filename*1=b.pdf",
    "filename*0*=UTF-8''a%20; filename*1=b.pdf",
    "name = spaced.pdf",
    "name=",
    "=x",
    ";",
    "name",
]
ENCODINGS = ["base64", "7bit", "quoted-printable", "Base64", " base64", "base64 ", "x-uue", ""]
CIDS = ["<logo@example.com>", "<a.b@c>", "logo", "<a b>", "<=?utf-8?q?x?=>", ""]
ENDS = ["\r\n", "\n", "\r"]
FIELD_NAMES = [
    "Content-Type",
    "content-type",
    "Content-Disposition",
    "Content-Transfer-Encoding",
    "Content-ID",
    "MIME-Version",
    "X-Note",
]


def _value(rng: random.Random, kinds: list[str], odd_kinds: list[str]) -> str:
    value = rng.choice(kinds if rng.random() < 0.8 else odd_kinds)
    for _ in range(rng.randrange(4)):
        if rng.random() < 0.85:
            name = rng.choice(NAMES)
            chosen = rng.choice(VALUES if rng.random() < 0.85 else ODD_VALUES)
            value += rng.choice([";", "; ", ";\t", " ; "]) + f"{name}={chosen}"
        else:
            value += "; " + rng.choice(ODD_PARAMS)
    return value


def _field(rng: random.Random) -> str:
    name = rng.choice(FIELD_NAMES)
    value = {
        "content-type": lambda: _value(rng, TYPES, ODD_TYPES),
        "content-disposition": lambda: _value(rng, DISPOSITIONS, ODD_TYPES),
        "content-transfer-encoding": lambda: rng.choice(ENCODINGS),
        "content-id": lambda: rng.choice(CIDS),
    }.get(name.lower(), lambda: rng.choice(["1.0", "caf\udce9", "=?utf-8?q?x?=", ""]))()
    end = rng.choice(ENDS)
    if rng.random() < 0.3 and " " in value:  # fold at a blank
        at = value.index(" ")
        value = value[:at] + end + rng.choice([" ", "\t"]) + value[at + 1 :]
    return f"{name}:{rng.choice([' ', '', '  '])}{value}{end}"


def _block(rng: random.Random) -> bytes:
    fields = [_field(rng) for _ in range(rng.randrange(1, 5))]
    if rng.random() < 0.03:
        fields.insert(0, rng.choice([" continued\r\n", "From someone\r\n", ":x\r\n"]))
    return "".join(fields).encode("ascii", "surrogateescape")


def _answer(ask: Callable[[], Any]) -> Any:
    try:
        return ask()
    except Exception as exc:  # both sides must fail alike
        return type(exc).__name__


def _answers(head: Message, default: str) -> list[Any]:
    head.set_default_type(default)
    questions: list[Callable[[], Any]] = [
        head.get_content_type,
        head.get_content_maintype,
        head.get_boundary,
        head.get_filename,
        head.get_content_disposition,
        head.get_content_charset,
        lambda: str(head.get("content-transfer-encoding", "")),
        lambda: str(head.get("Content-ID", "") or ""),
        lambda: head.get_param("name", header="content-disposition"),
    ]
    return [_answer(ask) for ask in questions]


def test_header_blocks_read_plainly_answer_as_the_email_package() -> None:
    rng = random.Random(20261121)
    plain = 0
    for case in range(2500):
        block = _block(rng)
        default = rng.choice(["text/plain", "message/rfc822"])
        mine = parse_head(block)
        plain += isinstance(mine, PlainHeaders)
        reference = BytesParser(policy=policy.default).parsebytes(block, headersonly=True)
        assert _answers(mine, default) == _answers(reference, default), f"case {case}: {block!r}"
    assert plain > 600  # the plain reading is what most blocks get


def test_plain_parameters_are_split_as_compat32_splits_them() -> None:
    """Parameters of a plain block are split by a pattern, not by the email package's parser:
    every way of asking for them answers as that parser does on the same values."""
    rng = random.Random(20261122)
    checked = 0
    for case in range(2500):
        mine = parse_head(_block(rng))
        if not isinstance(mine, PlainHeaders):
            continue
        reference = Message()
        for name, value in mine.items():
            reference.set_raw(name, value)
        for header in ("content-type", "Content-Disposition", "content-transfer-encoding"):
            for unquote in (True, False):
                asked = {"header": header, "unquote": unquote}
                assert mine.get_params(**asked) == reference.get_params(**asked), f"case {case}"
                for param in NAMES:
                    found = mine.get_param(param, **asked)
                    assert found == reference.get_param(param, **asked), f"case {case}"
        checked += 1
    assert checked > 600


def test_a_plain_block_keeps_every_field_in_order() -> None:
    block = b"Content-Type: text/plain;\r\n charset=utf-8\r\nX-A: 1\r\nContent-Type: image/png\r\n"
    head = parse_head(block)
    assert isinstance(head, PlainHeaders)
    assert head.items() == [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("X-A", "1"),
        ("Content-Type", "image/png"),
    ]
    assert head.get_content_type() == "text/plain"
