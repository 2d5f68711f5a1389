"""Opening PDFs that strangers sent us, and what they carry: embedded files and text.

pypdf on hostile or damaged input raises whatever it meets on the way (its own errors, but also
KeyError, ValueError, zlib and struct errors, RecursionError); every one of those means the same
to us, a PDF we cannot read, so they are caught in one place and turned into `PdfUnreadable`
with the reason code the Inbox shows. Its log chatter about repaired cross-reference tables is
quieted to errors: a repaired PDF is a normal PDF here.
"""

from __future__ import annotations

import io
import logging
from typing import IO

from pypdf import PasswordType, PdfReader

logging.getLogger("pypdf").setLevel(logging.ERROR)

PDF_MAGIC = b"%PDF-"
MAX_EMBEDDED = 20 * 1024 * 1024


class PdfUnreadable(ValueError):
    """`reason` is `pdf-encrypted` or `pdf-broken`; `str()` adds the detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def looks_like_pdf(data: bytes) -> bool:
    """The header may follow up to 1 KiB of junk, as readers have always allowed."""
    return PDF_MAGIC in data[:1024]


def open_pdf(data: bytes | IO[bytes]) -> PdfReader:
    """A reader on `data` (bytes, or a file it reads from as it needs), decrypted when only
    an owner password protects it."""
    try:
        reader = PdfReader(io.BytesIO(data) if isinstance(data, bytes) else data, strict=False)
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise PdfUnreadable("pdf-encrypted", "the PDF needs a password to open")
        len(reader.pages)
    except PdfUnreadable:
        raise
    except Exception as exc:
        raise _broken(exc) from exc
    return reader


def embedded_files(reader: PdfReader) -> dict[str, bytes]:
    """Embedded files by name (first of each name), skipping any larger than MAX_EMBEDDED."""
    try:
        found = reader.attachments
        return {
            name: contents[0]
            for name, contents in found.items()
            if contents and len(contents[0]) <= MAX_EMBEDDED
        }
    except Exception as exc:
        raise _broken(exc) from exc


def page_text(reader: PdfReader, max_pages: int = 2) -> str:
    """The text of the first pages: an invoice says what it is and whom it concerns on page
    one, and pypdf's extraction costs tens of milliseconds a page."""
    try:
        return "\n".join(page.extract_text() or "" for page in reader.pages[:max_pages])
    except Exception as exc:
        raise _broken(exc) from exc


def _broken(exc: Exception) -> PdfUnreadable:
    detail = " ".join(str(exc).split())[:200]
    return PdfUnreadable(
        "pdf-broken", f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    )
