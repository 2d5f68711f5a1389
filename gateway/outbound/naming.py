"""File names and paths at the destination, from a template the office chooses.

The rendered name is one safe path component, so no document can choose where it lands.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from gateway.filenames import safe_filename
from gateway.outbound.base import Outgoing, PermanentError

DEFAULT_TEMPLATE = "[id]-[original]"
DEFAULT_UPLOAD_PATH = "Invoice_import/"

_FIELDS: dict[str, Callable[[Outgoing], str]] = {
    "id": lambda o: str(o.document_id),
    "original": lambda o: o.filename,
    "dossier": lambda o: o.dossier,
    "accounting_file_id": lambda o: o.accounting_file_id,
    "vat": lambda o: o.vat,
    "type": lambda o: o.doc_type,
    "number": lambda o: str(o.facts.get("number") or ""),
    "date": lambda o: str(o.facts.get("issue_date") or ""),
}
_PLACEHOLDER = re.compile(r"\[([a-z_]+)\]")


def check_template(template: str) -> str | None:
    """The problem with `template`, or None when every placeholder is known."""
    unknown = sorted(set(_PLACEHOLDER.findall(template)) - set(_FIELDS))
    if unknown:
        known = ", ".join(f"[{k}]" for k in _FIELDS)
        return f"unknown placeholder [{unknown[0]}] (known: {known})"
    if "[id]" not in template and "[number]" not in template:
        return "must contain [id] or [number], or documents would overwrite each other"
    return None


def render_text(template: str, item: Outgoing) -> str:
    """`template` with its placeholders filled in, as text (a subject line), not a name."""
    return _PLACEHOLDER.sub(
        lambda m: _FIELDS[m.group(1)](item) if m.group(1) in _FIELDS else m.group(0), template
    )


def unknown_placeholder(template: str, allowed: set[str] | None = None) -> str | None:
    """The first placeholder in `template` that is not in `allowed` (default: all fields)."""
    known = set(_FIELDS) if allowed is None else allowed
    unknown = sorted(set(_PLACEHOLDER.findall(template)) - known)
    return unknown[0] if unknown else None


def render(template: str, item: Outgoing) -> str:
    """The file name for `item`; separators inside a value (an invoice number "INV/1") are
    replaced, so no value can add a directory level."""
    name = _PLACEHOLDER.sub(lambda m: re.sub(r"[/\\]", "_", _FIELDS[m.group(1)](item)), template)
    return safe_filename(name, fallback=f"document-{item.document_id}")


CATEGORY = {
    "purchase_invoice": "purchase",
    "purchase_credit_note": "purchase",
    "sales_invoice": "sales",
    "sales_credit_note": "sales",
    "bank_statement": "bank",
    "other": "other",
}


def category(doc_type: str) -> str:
    """purchase, sales, bank or other: how packages sort their imports."""
    return CATEGORY.get(doc_type, "other")


def target_folder(options: Any, item: Outgoing) -> str:
    """The relative folder for `item`: the upload path, then its type's sub-path if any.

    The dossier's overrides (`upload_path`, `<category>_subpath`) win over the integration's.
    Neither part may be absolute or climb with '..', so no setting leaves the drop.
    """
    key = f"{category(item.doc_type)}_subpath"
    upload = str(item.overrides.get("upload_path") or options.upload_path)
    sub = str(item.overrides.get(key) or getattr(options, key))
    for what, value in (("upload path", upload), (key, sub)):
        problem = check_upload_path(value)
        if problem:
            raise PermanentError("bad-upload-path", f"{what} {value!r} {problem}")
    return str(PurePosixPath(upload) / sub) if sub else (upload.rstrip("/") or ".")


@functools.lru_cache(maxsize=256)  # checked for every document, and an office has few paths
def check_upload_path(path: str) -> str | None:
    """The problem with an upload path, or None: it must stay below the login or drop root."""
    parts = PurePosixPath(path).parts
    if path.startswith("/") or ".." in parts:
        return "must be a relative path without '..'"
    return None
