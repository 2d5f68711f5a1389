"""File names and paths at the destination, from a template the office chooses.

The rendered name is one safe path component, so no document can choose where it lands.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import PurePosixPath

from gateway.filenames import safe_filename
from gateway.outbound.base import Outgoing

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


def check_upload_path(path: str) -> str | None:
    """The problem with an upload path, or None: it must stay below the login or drop root."""
    parts = PurePosixPath(path).parts
    if path.startswith("/") or ".." in parts:
        return "must be a relative path without '..'"
    return None
