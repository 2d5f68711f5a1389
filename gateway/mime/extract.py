"""A raw message into the files that are documents.

Mail from the wild is often broken: nothing here raises on a bad header or a bad transfer
encoding; the worst case is a part with odd bytes, which recognition then calls unrecognised.
What is deliberately not a document (bodies, signatures, logos, report parts) is listed with
the reason, so "where did my attachment go" always has an answer. Only a message past a limit
(parts, nesting, header size, an archive bomb) raises `Quarantine`; it is then kept aside whole.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import BinaryIO, Generic, Protocol, TypeVar

from gateway.config import MimeSettings
from gateway.filenames import safe_filename
from gateway.intake import archive
from gateway.mime.body import Body, Keeper, MemoryKeeper
from gateway.mime.classify import decoded_filename, fallback_name, never_a_document, not_a_document
from gateway.mime.message import scan_header_size
from gateway.mime.walk import Leaf, LimitExceeded, Walk
from gateway.store.blobs import BlobStore, BlobWriter, MemoryBudget, Staged

# Bytes of a message's documents held in memory until they are published, rather than
# written to staged files at once: enough for the usual invoice, little for a batch of them.
IN_MEMORY = 256 * 1024


class Quarantine(Exception):
    """The message is past a limit; `str()` is the reason kept with it."""


@dataclass(frozen=True)
class Part:
    filename: str
    media_type: str
    data: bytes


@dataclass(frozen=True)
class StoredPart:
    """A document part already written to a staged blob file (see `extract_to_blobs`)."""

    filename: str
    media_type: str
    blob: Staged

    @property
    def data(self) -> bytes:
        return self.blob.read()

    def head(self, size: int) -> bytes:
        with self.blob.open() as fh:
            return fh.read(size)

    def open(self) -> BinaryIO:
        return self.blob.open()

    def read(self) -> bytes:
        return self.blob.read()


P = TypeVar("P", Part, StoredPart)

P_co = TypeVar("P_co", Part, StoredPart, covariant=True)


@dataclass(frozen=True)
class Skipped:
    """A file-like part that is not a document, and why."""

    name: str
    media_type: str
    size: int
    why: str


@dataclass
class Extraction(Generic[P]):
    parts: list[P] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


class _Target(Protocol[P_co]):
    """Where an extraction keeps bodies, and the parts it makes of them."""

    def keeper(self) -> Keeper: ...
    def part(self, name: str, media_type: str, kept: Keeper) -> P_co: ...
    def entry(self, name: str, media_type: str, data: bytes) -> P_co: ...
    def read(self, kept: Keeper) -> bytes: ...
    def open(self, kept: Keeper) -> BinaryIO: ...
    def discard(self, kept: Keeper) -> None: ...


class _InMemory:
    def keeper(self) -> Keeper:
        return MemoryKeeper()

    def part(self, name: str, media_type: str, kept: Keeper) -> Part:
        return Part(name, media_type, self.read(kept))

    def entry(self, name: str, media_type: str, data: bytes) -> Part:
        return Part(name, media_type, data)

    def read(self, kept: Keeper) -> bytes:
        assert isinstance(kept, MemoryKeeper)
        return bytes(kept.data)

    def open(self, kept: Keeper) -> BinaryIO:
        assert isinstance(kept, MemoryKeeper)
        return kept.open()

    def discard(self, kept: Keeper) -> None:
        assert isinstance(kept, MemoryKeeper)
        kept.reset()


@dataclass
class _Staging:
    """Kept bodies go to staged blobs, in memory while `budget` allows; the caller
    publishes those of the parts."""

    blobs: BlobStore
    finished: dict[int, Staged] = field(default_factory=dict)
    budget: MemoryBudget = field(default_factory=lambda: MemoryBudget(IN_MEMORY))

    def keeper(self) -> Keeper:
        return self.blobs.stage(self.budget)

    def _staged(self, kept: Keeper) -> Staged:
        assert isinstance(kept, BlobWriter)
        if id(kept) not in self.finished:
            self.finished[id(kept)] = kept.finish()
        return self.finished[id(kept)]

    def part(self, name: str, media_type: str, kept: Keeper) -> StoredPart:
        return StoredPart(name, media_type, self._staged(kept))

    def entry(self, name: str, media_type: str, data: bytes) -> StoredPart:
        writer = self.blobs.stage(self.budget)
        writer.write(data)
        return StoredPart(name, media_type, writer.finish())

    def read(self, kept: Keeper) -> bytes:
        return self._staged(kept).read()

    def open(self, kept: Keeper) -> BinaryIO:
        return self._staged(kept).open()

    def discard(self, kept: Keeper) -> None:
        self._staged(kept).discard()


def extract(raw: bytes, limits: MimeSettings) -> Extraction[Part]:
    """The documents in `raw`; raises `Quarantine` past a limit."""
    return _extract(io.BytesIO(raw), limits, _InMemory())


def extract_to_blobs(
    message: Path | bytes, limits: MimeSettings, blobs: BlobStore
) -> Extraction[StoredPart]:
    """The documents in `message` (a file, or bytes already in memory), each written to a
    staged blob of `blobs` (the caller publishes them); from a file, memory stays small
    whatever the message's size. Raises `Quarantine` past a limit, having dropped what it
    staged."""
    target = _Staging(blobs)
    try:
        with io.BytesIO(message) if isinstance(message, bytes) else message.open("rb") as fh:
            return _extract(fh, limits, target)
    except BaseException:
        for staged in target.finished.values():
            staged.discard()
        raise


def _extract(fh: BinaryIO, limits: MimeSettings, target: _Target[P]) -> Extraction[P]:
    if scan_header_size(fh, limits.max_header_bytes) > limits.max_header_bytes:
        raise Quarantine(f"header larger than {limits.max_header_bytes} bytes")
    walk = Walk(limits, lambda head: _open_body(head, target), lambda leaf: _attached(leaf, target))
    try:
        walk.message(fh)
    except LimitExceeded as exc:
        _drop(walk.leaves, target)
        raise Quarantine(str(exc)) from None
    except RecursionError:
        _drop(walk.leaves, target)
        raise Quarantine("MIME structure nested too deep to parse") from None
    cids = {cid for leaf in walk.leaves for cid in _body(leaf).cids}
    result: Extraction[P] = Extraction()
    budget = archive.Budget(limits.zip_max_total)
    try:
        for number, leaf in enumerate(walk.leaves, start=1):
            _classify(leaf, number, cids, limits, budget, result, target)
    except Quarantine:
        _drop(walk.leaves, target)
        raise
    return result


def _body(leaf: Leaf) -> Body:
    assert isinstance(leaf.sink, Body)
    return leaf.sink


def _open_body(head: Message, target: _Target[P]) -> Body:
    """Keep what may be a document (or is a message to enter); count the rest."""
    media_type = head.get_content_type()
    name = decoded_filename(head)
    wanted = name.lower().endswith(".eml") or not never_a_document(head, media_type, name)
    return Body(target.keeper() if wanted else None, media_type == "text/html", name)


def _attached(leaf: Leaf, target: _Target[P]) -> BinaryIO | None:
    """A `.eml` sent as a file is entered like an attached message (nothing to enter when
    it is blank); its kept bytes are only read to do so."""
    body = _body(leaf)
    body.finish_scan()
    if not body.name.lower().endswith(".eml") or body.keeper is None:
        return None
    if body.blank:
        target.discard(body.keeper)
        return io.BytesIO(b"")
    reader = target.open(body.keeper)
    target.discard(body.keeper)  # the open reader keeps the bytes until it is closed
    return reader


def _drop(leaves: list[Leaf], target: _Target[P]) -> None:
    for leaf in leaves:
        keeper = _body(leaf).keeper
        if keeper is not None:
            target.discard(keeper)


def _classify(
    leaf: Leaf,
    number: int,
    cids: set[str],
    limits: MimeSettings,
    budget: archive.Budget,
    result: Extraction[P],
    target: _Target[P],
) -> None:
    part, body = leaf.head, _body(leaf)
    media_type = part.get_content_type()
    raw_name = body.name
    # The fallback only when the part has no usable name: looking up its extension costs.
    name = safe_filename(raw_name, fallback="") or fallback_name(media_type, number)
    why = not_a_document(part, media_type, raw_name, body.size, cids, limits)
    if why or body.keeper is None:
        result.skipped.append(Skipped(name, media_type, body.size, why))
        if body.keeper is not None:
            target.discard(body.keeper)
        return
    if archive.is_archive(name, media_type):
        try:
            entries = archive.unpack(
                target.read(body.keeper), name, limits, budget, _skip_entry(result)
            )
        except archive.ArchiveRefused as exc:
            raise Quarantine(str(exc)) from None
        except archive.Unreadable:
            entries = None
        if entries is not None:
            target.discard(body.keeper)
            result.parts.extend(
                target.entry(safe_filename(e.name, fallback=f"{name}-entry"), e.media_type, e.data)
                for e in entries
            )
            return
    result.parts.append(target.part(name, media_type, body.keeper))


def _skip_entry(result: Extraction[P]) -> Callable[[str, str], None]:
    def skip(name: str, why: str) -> None:
        result.skipped.append(Skipped(name, "application/octet-stream", 0, why))

    return skip
