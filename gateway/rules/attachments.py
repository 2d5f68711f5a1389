"""Files carried inside an e-invoice (base64 in UBL and CII): only a real PDF counts.

Senders and test suites put placeholder strings, empty elements and truncated data behind a
declared `application/pdf`; treating those as the invoice's visual would hand the accountant
a file that does not open. The file name comes from a stranger and is reduced to a base name.
"""

from __future__ import annotations

import base64
import binascii
import re

_UNSAFE_NAME = re.compile(r"[^\w.-]+")


def pdf_from_base64(text: str) -> bytes | None:
    """The decoded bytes when they are a PDF, else None (placeholder, empty, not base64)."""
    try:
        content = base64.b64decode("".join(text.split()), validate=True)
    except binascii.Error:
        return None
    return content if content.startswith(b"%PDF-") else None


def pdf_name(filename: str, reference_id: str) -> str:
    base = re.split(r"[\\/]", filename.strip())[-1].strip(". ")
    name = _UNSAFE_NAME.sub("_", base or reference_id).strip("._") or "attachment"
    return name if name.lower().endswith(".pdf") else f"{name}.pdf"
