"""The rules stage's entry point: one file and one dossier in, a document type or a reason out.

Pure by design (no I/O, no clock), so the whole decision can be replayed on the test corpus.
The format is decided by content; the purchase/sales split by the parties named inside the
document, compared with the dossier's own numbers. File name, media type and sender are never
evidence of either; the declared media type only helps a person read a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.rules.split import decide
from gateway.rules.ubl import NotUbl, read_ubl
from gateway.rules.xmlsafe import NotXml, parse_xml
from gateway.store.models import DocType


@dataclass(frozen=True)
class DossierFacts:
    vat_number: str
    company_number: str


@dataclass(frozen=True)
class Recognition:
    """`doc_type` None means unrecognised; `reason` then starts with a kebab-case code.

    Codes: `not-xml`, `xml-broken`, `xml-doctype-forbidden`, `unsupported-format`,
    `party-mismatch`, `dossier-unidentified`.
    """

    doc_type: DocType | None
    reason: str
    facts: dict[str, Any]


def recognize(filename: str, media_type: str, data: bytes, dossier: DossierFacts) -> Recognition:
    try:
        root = parse_xml(data)
    except NotXml as exc:
        return Recognition(None, f"{exc}{_declared(filename, media_type)}", {})
    try:
        facts = read_ubl(root)
    except NotUbl as exc:
        return Recognition(None, f"unsupported-format: root {exc.root_tag}", {})
    decision = decide(facts, (dossier.vat_number, dossier.company_number))
    return Recognition(decision.doc_type, decision.reason, facts.as_json())


def _declared(filename: str, media_type: str) -> str:
    declared = ", ".join(part for part in (filename, media_type) if part)
    return f" (declared {declared})" if declared else ""
