"""The cheap scans of the MIME walk find what the patterns they replaced found."""

from __future__ import annotations

import random
import re

from gateway.mime.body import _Base64
from gateway.mime.lines import _dashes_after_line_end
from gateway.mime.walk import _without_line_end

DASHES_AFTER_LINE_END = re.compile(rb"(?:\r\n|\r|\n)--")
LINE_END_AT_END = re.compile(rb"(\r\n|\r|\n)\Z")


def samples(alphabet: bytes, count: int = 3000, longest: int = 12) -> list[bytes]:
    rng = random.Random(8)
    return [bytes(rng.choices(alphabet, k=rng.randrange(longest))) for _ in range(count)]


def test_dashes_after_a_line_end_as_the_pattern_finds_them() -> None:
    """Short samples, and long dashy ones that go past the dashes looked at one by one."""
    dashy = samples(b"\r\n-----a", count=1000, longest=60)
    for buf in [*samples(b"\r\n-a"), *dashy, b"a" + b"-" * 100, b"x-- -\n" * 20 + b"\r--"]:
        for start in range(len(buf) + 1):
            found = DASHES_AFTER_LINE_END.search(buf, start)
            assert _dashes_after_line_end(buf, start) == (found.end() - 2 if found else -1)


def test_one_line_end_is_cut_as_the_pattern_cut_it() -> None:
    for data in samples(b"\r\na"):
        assert _without_line_end(data) == LINE_END_AT_END.sub(b"", data)


class Kept:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def reset(self) -> None:
        self.data = b""


def test_base64_with_a_stray_byte_is_left_to_the_email_package() -> None:
    for stray in (b"!", b"-", b"\x00", b"\xff", b"=A"):
        assert not _Base64(Kept()).feed(b"QUJD" + stray + b"REVG\n")
    kept = Kept()
    decoder = _Base64(kept)
    assert decoder.feed(b"QUJDREVG\r\n") and decoder.feed(b"R0g=\n") and decoder.close()
    assert kept.data == b"ABCDEFGH"
