"""File names from mail are hostile: make them safe to show and to write anywhere."""

from __future__ import annotations

import re
import unicodedata

_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
_SPACES = re.compile(r"\s+")
MAX_BYTES = 200


def safe_filename(name: str, fallback: str = "document") -> str:
    """One path component with no separators, control characters or leading dots."""
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("_", _SPACES.sub(" ", name)).strip(" .")
    if not name:
        return fallback
    return _truncate(name)


def _truncate(name: str) -> str:
    """Shorten to MAX_BYTES of UTF-8, keeping the extension that packages look at."""
    if len(name.encode()) <= MAX_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 10:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    budget = MAX_BYTES - len(suffix.encode())
    stem = stem.encode()[:budget].decode(errors="ignore")
    return stem + suffix
