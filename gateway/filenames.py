"""File names from mail are hostile: make them safe to show and to write anywhere.

A name only ever becomes a display name and a hint for the package; storage uses generated
ids. Still, a name travels to SFTP servers, Windows shares and mail headers, so it is reduced
to one path component without control, format (bidi, zero-width) or reserved-device names.
"""

from __future__ import annotations

import re
import unicodedata

_UNSAFE = re.compile(r'[<>:"/\\|?*]')
_SPACES = re.compile(r"\s+")
# Windows refuses these as file names whatever the extension (CON.pdf is CON).
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)
MAX_BYTES = 200


def safe_filename(name: str, fallback: str = "document") -> str:
    """One path component with no separators, control characters or leading dots."""
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(_char(c) for c in _SPACES.sub(" ", name))
    name = _UNSAFE.sub("_", name).strip(" .")
    if not name:
        return fallback
    if name.split(".", 1)[0].rstrip(" ").upper() in _RESERVED:
        name = "_" + name
    return _truncate(name)


def _char(c: str) -> str:
    """Controls become `_`; format characters (bidi overrides, zero-width) and unpaired
    surrogates vanish, so what is shown is what the name really ends in."""
    category = unicodedata.category(c)
    if category == "Cc":
        return "_"
    if category in ("Cf", "Cs", "Co", "Cn"):
        return ""
    return c


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
