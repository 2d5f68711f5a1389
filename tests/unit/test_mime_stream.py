"""The streaming MIME walk against the email package's own reading, and its memory.

The reference below is the email package parsing the whole message and decoding each leaf:
what `mime.extract` did before it streamed. Every corpus mail, and mutations of them (cut
short, other line ends, lines dropped or doubled, bytes flipped, base64 padding broken), must
come apart into the same leaves with the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import tracemalloc
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from pathlib import Path

import pytest

from gateway import mime
from gateway.config import MimeSettings
from gateway.mime.body import Body, MemoryKeeper
from gateway.mime.extract import IN_MEMORY
from gateway.mime.walk import Leaf, Walk
from gateway.store.blobs import BlobStore, MemoryBudget

LIMITS = MimeSettings()
Seen = list[tuple[str, str, str]]


def _parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def _name(part: Message) -> str:
    try:
        return part.get_filename() or ""
    except Exception:  # a broken header reads as no name on both sides
        return ""


def reference(raw: bytes) -> Seen:
    """Leaves in order, as (type, name, sha256 of the decoded body), from the email package."""
    found: Seen = []
    stack: list[Message] = [_parse(raw)]
    while stack:
        part = stack.pop()
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
            continue
        data = part.get_payload(decode=True)
        data = data if isinstance(data, bytes) else b""
        if _name(part).lower().endswith(".eml"):
            stack.extend([_parse(data)] if data.strip() else [])
            continue
        found.append((part.get_content_type(), _name(part), hashlib.sha256(data).hexdigest()))
    return found


def streamed(raw: bytes) -> Seen:
    def attached(leaf: Leaf) -> io.BytesIO | None:
        assert isinstance(leaf.sink, Body) and isinstance(leaf.sink.keeper, MemoryKeeper)
        if not _name(leaf.head).lower().endswith(".eml"):
            return None
        return io.BytesIO(b"" if leaf.sink.blank else bytes(leaf.sink.keeper.data))

    walk = Walk(LIMITS, lambda head: Body(MemoryKeeper(), scan_cids=False), attached)
    walk.message(io.BytesIO(raw))
    seen: Seen = []
    for leaf in walk.leaves:
        assert isinstance(leaf.sink, Body) and isinstance(leaf.sink.keeper, MemoryKeeper)
        digest = hashlib.sha256(leaf.sink.keeper.data).hexdigest()
        seen.append((leaf.head.get_content_type(), _name(leaf.head), digest))
    return seen


def _mutate(raw: bytes, rng: random.Random) -> bytes:
    lines = raw.splitlines(keepends=True) or [b""]
    where = rng.randrange(len(lines))
    choice = rng.randrange(6)
    if choice == 0:
        return raw[: rng.randrange(len(raw) + 1)]
    if choice == 1:
        return raw.replace(b"\r\n", b"\n").replace(b"\n", rng.choice([b"\r", b"\n", b"\r\n"]))
    if choice == 2:
        del lines[where]
    elif choice == 3:
        lines.insert(where, lines[where])
    elif choice == 4:
        lines[where] = lines[where].replace(b"=", b"") + rng.choice([b"=", b"*", b"==="])
    else:
        at = rng.randrange(len(raw) or 1)
        return raw[:at] + bytes([rng.randrange(256)]) + raw[at + 1 :]
    return b"".join(lines)


def _mails(corpus: Path) -> list[Path]:
    return sorted((corpus / "eml").glob("*.eml"))


def test_every_corpus_mail_comes_apart_as_the_email_package_reads_it(corpus: Path) -> None:
    for path in _mails(corpus):
        raw = path.read_bytes()
        assert streamed(raw) == reference(raw), path.name


def test_mutated_mails_come_apart_as_the_email_package_reads_them(corpus: Path) -> None:
    rng = random.Random(20261121)
    mails = [path.read_bytes() for path in _mails(corpus)]
    for case in range(600):
        raw = rng.choice(mails)
        for _ in range(rng.randrange(1, 4)):
            raw = _mutate(raw, rng)
        assert streamed(raw) == reference(raw), f"case {case}: {raw[:2000]!r}"


def _big_mail(size: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "scanner@example.com"
    msg["Subject"] = "scan"
    msg.set_content("A large scan.")
    data = random.Random(1).randbytes(size)
    msg.add_attachment(data, maintype="application", subtype="pdf", filename="scan.pdf")
    return msg.as_bytes()


def test_a_file_extraction_stages_the_same_bytes_as_the_memory_one(tmp_path: Path) -> None:
    raw = _big_mail(300_000)
    (tmp_path / "m.eml").write_bytes(raw)
    blobs = BlobStore(tmp_path / "blobs")
    found = mime.extract_to_blobs(tmp_path / "m.eml", LIMITS, blobs)
    [part] = found.parts
    data = part.data
    assert part.blob.digest == hashlib.sha256(data).hexdigest()
    assert mime.extract(raw, LIMITS).parts == [mime.Part(part.filename, part.media_type, data)]
    blobs.publish([part.blob])
    assert blobs.get(part.blob.digest) == data
    assert list((tmp_path / "blobs" / ".staging").iterdir()) == []


def test_a_big_message_is_taken_apart_in_little_memory(tmp_path: Path) -> None:
    """The email package holds several copies of a message (about 5 times 4 MB here)."""
    (tmp_path / "m.eml").write_bytes(_big_mail(4_000_000))
    blobs = BlobStore(tmp_path / "blobs")
    tracemalloc.start()
    try:
        found = mime.extract_to_blobs(tmp_path / "m.eml", LIMITS, blobs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found.parts[0].blob.size == 4_000_000
    assert peak < 1_000_000


def test_small_parts_stay_in_memory_until_published_and_big_ones_go_to_files(
    tmp_path: Path,
) -> None:
    """A file made for every part only to be read back costs more than a small invoice; the
    budget keeps a message's memory small whatever its parts."""
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg.set_content("parts")
    small, big = b"%PDF-1.4 small" * 100, random.Random(2).randbytes(IN_MEMORY + 1)
    for data in (small, big):
        msg.add_attachment(data, "application", "pdf", filename="x.pdf")
    (tmp_path / "m.eml").write_bytes(msg.as_bytes())
    blobs = BlobStore(tmp_path / "blobs")
    found = mime.extract_to_blobs(tmp_path / "m.eml", LIMITS, blobs)
    assert [p.data for p in found.parts] == [small, big]
    staging = tmp_path / "blobs" / ".staging"
    assert [p.name for p in staging.iterdir()] == [found.parts[1].blob.path.name]
    blobs.publish([p.blob for p in found.parts])
    assert [blobs.get(p.blob.digest) for p in found.parts] == [small, big]
    assert list(staging.iterdir()) == []


def test_a_part_held_in_memory_leaves_no_file_when_publishing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    writer = blobs.stage(MemoryBudget(1000))
    writer.write(b"%PDF-1.4 small")
    staged = writer.finish()

    def fail(_fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        blobs.publish([staged])
    staged.discard()
    assert list((tmp_path / "blobs" / ".staging").iterdir()) == []


def test_a_quarantined_message_leaves_no_staged_files(tmp_path: Path) -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg.set_content("parts")
    for n in range(5):
        msg.add_attachment(b"%PDF-1.4 " + bytes([n]) * 3000, "application", "pdf", filename="x.pdf")
    (tmp_path / "m.eml").write_bytes(msg.as_bytes())
    blobs = BlobStore(tmp_path / "blobs")
    with pytest.raises(mime.Quarantine):
        mime.extract_to_blobs(tmp_path / "m.eml", MimeSettings(max_parts=4), blobs)
    assert list((tmp_path / "blobs" / ".staging").iterdir()) == []


@pytest.mark.parametrize("padding", [b"", b"=", b"==", b"===", b"A", b"A=", b"*"])
def test_base64_ends_decode_as_the_email_package_decodes_them(padding: bytes) -> None:
    encoded = base64.encodebytes(b"%PDF-1.4 invoice" * 100).rstrip(b"=\n") + padding
    raw = (
        b"From: a@example.com\r\nContent-Type: application/pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"\r\n"
    )
    assert streamed(raw) == reference(raw)
