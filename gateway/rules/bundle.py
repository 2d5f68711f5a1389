"""Files of one message that are one document: an e-invoice and the PDF that shows it.

Senders attach the UBL and its PDF side by side, or a Factur-X PDF and a copy of its XML; the
accountant wants one document with a visual, not two documents of which one is unbookable. A
PDF belongs to a structured document of the same message when it has the same file stem, or
when it is a hybrid of the same invoice (same number and supplier), or when its text shows the
invoice number and does not read as another kind of document (a credit note quoting it).
Each structured document takes at most one PDF, each PDF goes to one document; a stem match is
preferred over a number match. Pure: the pipeline stores what this decides.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from gateway.rules.recognize import Recognition
from gateway.rules.vat import normalize_vat

MIN_NUMBER_LENGTH = 3
_SEPARATORS = re.compile(r"[\s.\-/]+")


@dataclass(frozen=True)
class Item:
    filename: str
    found: Recognition


def pair_visuals(items: Sequence[Item]) -> dict[int, int]:
    """Map the index of each PDF that shows a structured document to that document's index."""
    structured = [i for i, item in enumerate(items) if _is_structured_xml(item)]
    pdfs = [i for i, item in enumerate(items) if _is_pdf(item)]
    pairs: dict[int, int] = {}
    for matcher in (_same_stem, _same_invoice):
        for doc in structured:
            if doc in pairs.values():
                continue
            pdf = next((p for p in pdfs if p not in pairs and matcher(items[doc], items[p])), None)
            if pdf is not None:
                pairs[pdf] = doc
    return pairs


def _is_structured_xml(item: Item) -> bool:
    facts = item.found.facts
    return facts.get("syntax") in ("ubl", "cii") and facts.get("container") != "pdf"


def _is_pdf(item: Item) -> bool:
    facts = item.found.facts
    return facts.get("syntax") == "pdf" or facts.get("container") == "pdf"


def _same_stem(doc: Item, pdf: Item) -> bool:
    return _stem(doc.filename) == _stem(pdf.filename) != ""


def _same_invoice(doc: Item, pdf: Item) -> bool:
    number = str(doc.found.facts.get("number", ""))
    if len(number) < MIN_NUMBER_LENGTH:
        return False
    if pdf.found.facts.get("container") == "pdf":
        return number == pdf.found.facts.get("number") and _supplier(doc) == _supplier(pdf)
    # A credit note names the invoice it corrects: its number alone does not make it the visual.
    kind = pdf.found.facts.get("kind")
    return (not kind or kind == doc.found.facts.get("kind")) and _has_number(pdf.found.text, number)


def pdf_shows(text: str, number: str, supplier_ids: Sequence[str]) -> bool:
    """Whether a PDF's text shows the invoice `number` of the supplier with one of
    `supplier_ids`: both must be there, since numbers alone repeat across suppliers."""
    if len(number) < MIN_NUMBER_LENGTH or not _has_number(text, number):
        return False
    compact = _SEPARATORS.sub("", text.upper())
    wanted = [normalize_vat(value) for value in supplier_ids if normalize_vat(value)]
    return any(value in compact for value in wanted)


def _has_number(text: str, number: str) -> bool:
    return re.search(rf"(?<![\w/-]){re.escape(number)}(?![\w/-])", text) is not None


def _supplier(item: Item) -> str:
    supplier = item.found.facts.get("supplier") or {}
    return normalize_vat(str(supplier.get("vat", "")))


def _stem(filename: str) -> str:
    return PurePosixPath(filename.strip().lower()).stem
