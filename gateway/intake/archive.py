"""Zip archives into their files, with the limits that keep a zip bomb from hurting anyone.

Nothing is ever extracted to disk: entries are read into memory through a byte counter (the
sizes an entry declares are not trusted), so a path in an archive can never choose where
anything lands. A name that tries to leave the archive (`../`, `/abs`, `C:\\`) is still a
sign of an attack, and like a bomb it sends the whole message to quarantine.
"""

from __future__ import annotations

import io
import mimetypes
import stat
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import MimeSettings

CHUNK = 64 * 1024
# Below this many bytes of output a high ratio is normal (a page of XML compresses 50:1).
RATIO_FLOOR = 1024 * 1024
ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/x-zip"})


class ArchiveRefused(Exception):
    """The archive is past a limit or hostile; `str()` is the quarantine reason."""


class Unreadable(Exception):
    """The archive cannot be read (not a zip, encrypted, unknown method); keep it whole."""


@dataclass(frozen=True)
class Entry:
    name: str
    media_type: str
    data: bytes


@dataclass
class Budget:
    """Bytes all archives of one message may still expand to."""

    remaining: int


def is_archive(filename: str, media_type: str) -> bool:
    return media_type in ZIP_TYPES or filename.lower().endswith(".zip")


def unpack(
    data: bytes,
    label: str,
    limits: MimeSettings,
    budget: Budget,
    skip: Callable[[str, str], None],
    depth: int = 1,
) -> list[Entry]:
    """The files in archive `data` (nested zips unpacked too); `skip(name, why)` hears about
    entries that are not documents."""
    if depth > limits.zip_max_depth + 1:
        raise ArchiveRefused(f"{label}: zip archives nested deeper than {limits.zip_max_depth}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise Unreadable(f"{label}: not a readable zip archive ({exc})") from None
    if len(infos) > limits.zip_max_entries:
        raise ArchiveRefused(f"{label}: more than {limits.zip_max_entries} entries")
    for info in infos:
        _check_entry(info, label)
    entries: list[Entry] = []
    for info in infos:
        name = info.filename.rsplit("/", 1)[-1]
        if info.is_dir() or not name:
            continue
        why = _not_a_document(info, name)
        if why:
            skip(f"{label}/{info.filename}", why)
            continue
        content = _read(archive, info, label, limits, budget)
        if is_archive(name, ""):
            nested = f"{label}/{info.filename}"
            try:
                entries.extend(unpack(content, nested, limits, budget, skip, depth + 1))
                continue
            except Unreadable:
                pass
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        entries.append(Entry(name, media_type, content))
    return entries


def _check_entry(info: zipfile.ZipInfo, label: str) -> None:
    name = info.filename.replace("\\", "/")
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise ArchiveRefused(f"{label}: entry {name[:80]!r} has a path that leaves the archive")
    if info.flag_bits & 0x1:
        raise Unreadable(f"{label}: encrypted entries")


def _not_a_document(info: zipfile.ZipInfo, name: str) -> str:
    mode = info.external_attr >> 16
    if mode and stat.S_ISLNK(mode):
        return "symbolic link in archive"
    if info.filename.startswith("__MACOSX/") or name.startswith("._"):
        return "macOS resource fork"
    if name.startswith("."):
        return "hidden file in archive"
    return ""


def _read(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    label: str,
    limits: MimeSettings,
    budget: Budget,
) -> bytes:
    out = bytearray()
    try:
        with archive.open(info) as fh:
            while chunk := fh.read(CHUNK):
                out += chunk
                budget.remaining -= len(chunk)
                if budget.remaining < 0:
                    raise ArchiveRefused(
                        f"{label}: archives expand past {limits.zip_max_total} bytes"
                    )
                ratio_limit = limits.zip_max_ratio * max(info.compress_size, 1)
                if len(out) > RATIO_FLOOR and len(out) > ratio_limit:
                    raise ArchiveRefused(
                        f"{label}: entry {info.filename[:80]!r} expands more than "
                        f"{limits.zip_max_ratio} times"
                    )
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError) as exc:
        raise Unreadable(f"{label}: entry {info.filename[:80]!r} unreadable ({exc})") from None
    return bytes(out)
