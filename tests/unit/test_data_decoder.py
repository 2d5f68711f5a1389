"""The DATA decoder at the byte level: every way of cutting the stream gives the same message.

An oracle that reads the stream line by line, the way RFC 5321 describes it, says what each
stream means; the decoder must agree with it whatever the chunk boundaries are.
"""

from __future__ import annotations

import random

import pytest

from gateway.intake.smtpd.data_decoder import MAX_LINE_CHARS, DataDecoder, DataError

PIPELINED = b"MAIL FROM:<next@example.com>\r\nRCPT TO:<a@b>\r\n"


def oracle(stream: bytes) -> tuple[bytes, bytes]:
    """Message bytes and what follows the end line, one CRLF line at a time."""
    lines, pos = [], 0
    while True:
        end = stream.index(b"\r\n", pos)
        line, pos = stream[pos:end], end + 2
        if line == b".":
            break
        lines.append(line[1:] if line.startswith(b".") else line)
    return b"".join(line + b"\r\n" for line in lines), stream[pos:]


def decode(
    chunks: list[bytes], max_size: int | None = None, max_chars: int = MAX_LINE_CHARS
) -> tuple[DataDecoder, bytes, bytes]:
    decoder = DataDecoder(max_size, max_chars)
    out, rest = [], b""
    for chunk in chunks:
        if decoder.done:
            rest += chunk
            continue
        data, after = decoder.feed(chunk)
        out.extend(data)
        rest += after
    return decoder, b"".join(out), rest


def splits(stream: bytes) -> list[list[bytes]]:
    """The stream whole, byte by byte, and cut once and twice at every pair of places."""
    ways = [[stream], [bytes([b]) for b in stream]]
    for i in range(1, len(stream)):
        ways.append([stream[:i], stream[i:]])
        for j in range(i + 1, len(stream)):
            ways.append([stream[:i], stream[i:j], stream[j:]])
    return ways


GOOD = [
    b".\r\n",
    b"\r\n.\r\n",
    b"a\r\n.\r\n",
    b"..\r\n.\r\n",
    b"...\r\n.\r\n",
    b".a\r\n..\r\n.b\r\n.\r\n",
    b"Subject: x\r\n\r\nline.\r\n. \r\n.x.\r\n.\r\n",
    b"a.\r\n.\r.\r\n.\r\n".replace(b".\r.", b".."),
    b"x\r\n\r\n\r\n.\r\n",
]


@pytest.mark.parametrize("stream", GOOD)
def test_every_cut_of_a_message_decodes_like_the_oracle(stream: bytes) -> None:
    expected = oracle(stream + PIPELINED)
    for chunks in splits(stream + PIPELINED[:7]):
        decoder, out, rest = decode([*chunks, PIPELINED[7:]])
        assert decoder.done and decoder.error is None, chunks
        assert (out, rest) == expected, chunks
        assert decoder.size == len(expected[0])


def test_random_messages_and_random_chunks_agree_with_the_oracle() -> None:
    rng = random.Random(8)
    alphabet = [b"a", b".", b"\r\n", b"..", b"\r\n.", b"x" * 40]
    for _ in range(400):
        body = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        body = body.replace(b"\r\n.\r\n", b"\r\n..\r\n")
        if body.startswith(b".\r\n"):
            body = b"." + body
        stream = body + (b"\r\n" if body and not body.endswith(b"\r\n") else b"") + b".\r\n"
        stream += PIPELINED
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(1, 9))))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        decoder, out, rest = decode(chunks)
        assert decoder.error is None
        assert (out, rest) == oracle(stream), chunks


def test_only_crlf_dot_crlf_ends_the_data() -> None:
    stream = b"a\r\n.\n" + b"b\n.\r\n" + b"c\r.\r\n" + b"d\r\n.\r" + b"\r\n.\r\nQUIT\r\n"
    for chunks in splits(stream)[:300]:
        decoder, _, rest = decode(chunks)
        assert decoder.done and rest == b"QUIT\r\n", chunks


@pytest.mark.parametrize(
    "smuggled",
    [
        b"a\n.\nMAIL FROM:<evil@x>\r\n",
        b"a\r\n.\nMAIL FROM:<evil@x>\r\n",
        b"a\n.\r\nMAIL FROM:<evil@x>\r\n",
        b"a\r.\rMAIL FROM:<evil@x>\r\n",
        b"a\r\n.\rMAIL FROM:<evil@x>\r\n",
        b"a\rb\r\n",
        b"a\nb\r\n",
        b"\n\r\n",
        b"x\r",
    ],
)
def test_a_bare_cr_or_lf_refuses_the_one_message_and_nothing_more(smuggled: bytes) -> None:
    stream = smuggled + b"tail\r\n.\r\nQUIT\r\n"
    for chunks in splits(stream)[:400]:
        decoder, out, rest = decode(chunks)
        assert decoder.done and decoder.error is DataError.BARE_NEWLINE, chunks
        assert out == b"" or b"evil" not in out
        assert rest == b"QUIT\r\n"


def test_a_line_of_998_characters_passes_and_999_is_refused() -> None:
    ok = b"y" * 998 + b"\r\n"
    stuffed = b"." + b"." * 998 + b"\r\n"
    for stream, error in [
        (ok, None),
        (stuffed, None),
        (b"z" * 999 + b"\r\n", DataError.LINE_TOO_LONG),
        (b"a\r\n" + b"z" * 5000 + b"\r\n", DataError.LINE_TOO_LONG),
    ]:
        for cut in (1, 500, 998, 999, 1000):
            data = stream + b".\r\nNOOP\r\n"
            decoder, out, rest = decode([data[:cut], data[cut:]])
            assert decoder.error is error
            assert rest == b"NOOP\r\n"
            if error is None:
                assert out == oracle(data)[0]


def test_a_line_that_never_ends_is_refused_without_being_kept() -> None:
    decoder = DataDecoder(None)
    for _ in range(200):
        decoder.feed(b"q" * 10_000)
    assert decoder.error is DataError.LINE_TOO_LONG
    assert len(decoder._carry) < 10
    assert decoder.feed(b"\r\n.\r\n") == ([], b"")
    assert decoder.done


@pytest.mark.parametrize("limit", [0, 1, 8, 9, 10, 100])
def test_the_size_limit_counts_message_bytes_and_still_reads_to_the_end(limit: int) -> None:
    message = b"1234\r\n..\r\n"  # decodes to 9 bytes: 1234 CRLF . CRLF
    for chunks in splits(message + b".\r\nRSET\r\n")[:200]:
        decoder, out, rest = decode(chunks, max_size=limit)
        assert decoder.done and rest == b"RSET\r\n"
        if limit >= 9:
            assert decoder.error is None and out == b"1234\r\n.\r\n"
        else:
            assert decoder.error is DataError.TOO_BIG


def test_the_first_broken_rule_is_reported_and_output_stops() -> None:
    decoder = DataDecoder(5)
    out1, _ = decoder.feed(b"abc\r\n")
    out2, _ = decoder.feed(b"defgh\r\n")
    out3, _ = decoder.feed(b"bare\nlf\r\n" + b"x" * 2000 + b"\r\n")
    out4, rest = decoder.feed(b".\r\n")
    assert (out1, out2, out3, out4) == ([b"abc\r\n"], [], [], [])
    assert decoder.error is DataError.TOO_BIG and decoder.done and rest == b""


def test_feeding_after_the_end_is_a_programming_error() -> None:
    decoder = DataDecoder(None)
    decoder.feed(b".\r\n")
    with pytest.raises(ValueError):
        decoder.feed(b"x")


def test_memory_stays_bounded_by_the_chunk_not_the_message() -> None:
    decoder = DataDecoder(None)
    line = b"A" * 76 + b"\r\n"
    for _ in range(2000):
        decoder.feed(line * 30 + b"A" * 50)
        assert len(decoder._carry) <= 998
    assert decoder.size > 2000 * 30 * 78


def judge(stream: bytes, max_chars: int) -> tuple[set[DataError], bytes, bytes]:
    """The rules a stream breaks, its message and what follows the end, line by line: the end
    is the first CRLF . CRLF, and the lines before it are judged one at a time."""
    end = stream.index(b"\r\n.\r\n") + 2 if not stream.startswith(b".\r\n") else 0
    content, rest = stream[:end], stream[end + 3 :]
    broken: set[DataError] = set()
    if content.replace(b"\r\n", b"").translate(None, b"\r\n") != content.replace(b"\r\n", b""):
        broken.add(DataError.BARE_NEWLINE)
    message = []
    for line in content.split(b"\r\n")[:-1]:
        line = line[1:] if line.startswith(b".") else line
        if len(line) > max_chars:  # a stray CR or LF is one more character of its line
            broken.add(DataError.LINE_TOO_LONG)
        message.append(line + b"\r\n")
    return broken, b"".join(message), rest


def test_random_streams_with_broken_rules_are_judged_like_line_by_line() -> None:
    """Lines around the length limit, stuffed dots, stray CRs and LFs, cut into chunks of any
    size: refused exactly when a rule is broken, for a rule that is, and the end found."""
    rng = random.Random(1_000)
    max_chars = 40
    for _ in range(1_500):
        lines = []
        for _ in range(rng.randint(0, 12)):
            line = b"." * rng.choice([0, 0, 1, 2]) + b"w" * rng.randint(0, 44)
            if rng.random() < 0.04:
                at = rng.randint(0, len(line))
                line = line[:at] + rng.choice([b"\r", b"\n", b"\r\r", b"\n\r"]) + line[at:]
            lines.append(line.replace(b"\r\n", b"\r\r"))
        stream = b"".join(line + b"\r\n" for line in lines)
        stream = stream.replace(b"\r\n.\r\n", b"\r\n..\r\n") + b".\r\n" + PIPELINED
        if stream.startswith(b".\r\n") and lines:
            stream = b"." + stream
        broken, message, rest = judge(stream, max_chars)
        sizes = rng.choice([1, 3, 7, 41, 42, 100, 4_096])
        cuts = range(0, len(stream), rng.randint(1, sizes))
        chunks = [stream[at : at + cuts.step] for at in cuts]
        decoder, out, after = decode(chunks, max_chars=max_chars)
        assert decoder.done and after == rest, (stream, sizes)
        if broken:
            assert decoder.error in broken, (stream, sizes, broken)
        else:
            assert decoder.error is None and out == message, (stream, sizes)
