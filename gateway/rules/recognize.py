"""The rules stage's entry point: one file and one dossier in, a document type or a reason out.

Pure by design (no I/O, no clock), so the whole decision can be replayed on the test corpus.
The format is decided by content; the purchase/sales split by the parties named inside the
document, compared with the dossier's own numbers. File name, media type and sender are never
evidence of either; the declared media type only helps a person read a refusal.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import IO, Any, Protocol, runtime_checkable

from lxml import etree

from gateway.rules.camt import is_camt053, read_camt
from gateway.rules.cii import is_cii, read_cii
from gateway.rules.coda import CodaBroken, looks_like_coda, read_coda
from gateway.rules.facts import InvoiceFacts
from gateway.rules.facturx import EmbeddedXml, choose_xml
from gateway.rules.pdf import PdfUnreadable, embedded_files, looks_like_pdf, open_pdf, page_text
from gateway.rules.pdftext import Side, classify
from gateway.rules.split import Decision, decide
from gateway.rules.statement import StatementFacts, decide_statement
from gateway.rules.ubl import CREDIT_NOTE, INVOICE, read_ubl
from gateway.rules.xmlpath import local_name
from gateway.rules.xmlsafe import NotXml, looks_like_xml, parse_xml
from gateway.rules.xsd import MAX_ERRORS, UblSchemas
from gateway.store.models import DocType

# Enough of a file to tell PDF, CODA and XML apart without reading the rest.
HEAD = 4096


@runtime_checkable
class Content(Protocol):
    """A file recognised where it lies, read only as far as its format needs: a PDF is
    opened from the file (pypdf reads what it looks at), XML and CODA are read whole, and
    anything else is refused from its first bytes."""

    def head(self, size: int) -> bytes: ...
    def open(self) -> IO[bytes]: ...
    def read(self) -> bytes: ...


@dataclass(frozen=True)
class DossierFacts:
    vat_number: str
    company_number: str
    ibans: tuple[str, ...] = ()

    @property
    def ids(self) -> tuple[str, str]:
        return (self.vat_number, self.company_number)


@dataclass(frozen=True)
class Options:
    """Office-wide recognition settings (`[recognition]` in the config)."""

    pdf_min_confidence: float = 0.85
    ubl_schemas: UblSchemas | None = None


@dataclass(frozen=True)
class Visual:
    """A PDF that shows a structured document: embedded in it (`data`), or sent beside it
    (`part`, the index of that file among the message's parts, which are stored anyway)."""

    filename: str
    data: bytes = field(default=b"", repr=False)
    part: int | None = None


@dataclass(frozen=True)
class Recognition:
    """`doc_type` None means unrecognised; `reason` then starts with a kebab-case code.

    Codes: `not-xml`, `xml-broken`, `xml-doctype-forbidden`, `unsupported-format`,
    `party-mismatch`, `dossier-unidentified`, `account-mismatch`, `coda-broken`,
    `pdf-encrypted`, `pdf-broken`, `pdf-no-text`, `pdf-low-confidence`.
    `visual` is an embedded PDF to keep with the document; `text` is a plain PDF's text,
    used to pair it with the structured document it shows, and not stored.
    """

    doc_type: DocType | None
    reason: str
    facts: dict[str, Any] = field(default_factory=dict)
    visual: Visual | None = None
    text: str = field(default="", repr=False, compare=False)


def recognize(
    filename: str,
    media_type: str,
    data: bytes | Content,
    dossier: DossierFacts,
    options: Options = Options(),
    hint: Side | None = None,
) -> Recognition:
    """`hint` is a side declared outside the document (the intake address); only a plain PDF
    without a customer/supplier label uses it. Structured documents decide for themselves."""
    head = data[:HEAD] if isinstance(data, bytes) else data.head(HEAD)
    if not head.lstrip(b"\xef\xbb\xbf \t\r\n"):  # only blanks so far: look at all of it
        head = data if isinstance(data, bytes) else data.read()
    if looks_like_pdf(head) and not looks_like_xml(head):
        with _opened(data) as source:
            return _pdf(source, dossier, options, hint)
    if looks_like_coda(head):
        return _coda(_whole(data), dossier)
    try:
        root = parse_xml(_whole(data) if looks_like_xml(head) else head)
    except NotXml as exc:
        return Recognition(None, f"{exc}{_declared(filename, media_type)}")
    return _xml(root, dossier, options)


def _whole(data: bytes | Content) -> bytes:
    return data if isinstance(data, bytes) else data.read()


def _opened(data: bytes | Content) -> AbstractContextManager[bytes | IO[bytes]]:
    return nullcontext(data) if isinstance(data, bytes) else data.open()


def _xml(root: etree._Element, dossier: DossierFacts, options: Options) -> Recognition:
    if is_camt053(root):
        return _statement(read_camt(root), dossier)
    invoice = _invoice(root)
    if invoice is None:
        return Recognition(None, f"unsupported-format: root {root.tag}")
    found = _checked(root, invoice, decide(invoice, dossier.ids), options)
    visual = Visual(*invoice.pdf) if invoice.pdf else None
    return Recognition(found.doc_type, found.reason, found.facts, visual)


def _checked(
    root: etree._Element, invoice: InvoiceFacts, decision: Decision, options: Options
) -> Recognition:
    """The decision with the facts, flagged when the optional UBL schema check fails."""
    facts, reason = invoice.as_json(), decision.reason
    if options.ubl_schemas is not None and invoice.syntax == "ubl":
        errors = options.ubl_schemas.errors(root)
        facts |= {"xsd_valid": not errors, "xsd_errors": errors}
        if errors:
            count = f"{len(errors)}{'+' if len(errors) == MAX_ERRORS else ''}"
            reason += f"; fails the UBL 2.1 schema ({count} errors, first: {errors[0]})"
    return Recognition(decision.doc_type, reason, facts)


def _invoice(root: etree._Element) -> InvoiceFacts | None:
    if root.tag in (INVOICE, CREDIT_NOTE):
        return read_ubl(root)
    return read_cii(root) if is_cii(root) else None


def _coda(data: bytes, dossier: DossierFacts) -> Recognition:
    try:
        facts = read_coda(data)
    except CodaBroken as exc:
        return Recognition(None, str(exc), {"syntax": "coda"})
    return _statement(facts, dossier)


def _statement(facts: StatementFacts, dossier: DossierFacts) -> Recognition:
    return _recognised(decide_statement(facts, dossier.ids, dossier.ibans), facts.as_json())


def _pdf(
    data: bytes | IO[bytes], dossier: DossierFacts, options: Options, hint: Side | None
) -> Recognition:
    """A hybrid PDF is its XML; a PDF that embeds no invoice XML is read as text."""
    try:
        reader = open_pdf(data)
        files = embedded_files(reader)
    except PdfUnreadable as exc:
        return Recognition(None, str(exc), {"syntax": "pdf"})
    container = {"container": "pdf", "embedded_files": list(files)}
    embedded = choose_xml(files)
    note = ""
    if embedded is not None:
        hybrid = _hybrid(embedded, dossier, options)
        if hybrid.facts.get("syntax") in ("ubl", "cii"):
            return Recognition(hybrid.doc_type, hybrid.reason, hybrid.facts | container)
        note = f"; embedded {embedded.name} ignored: {hybrid.reason}"
    try:
        text = page_text(reader)
    except PdfUnreadable as exc:
        return Recognition(None, f"{exc}{note}", _pdf_facts(files))
    return _plain_pdf(text, _pdf_facts(files), dossier, options, hint, note)


def _plain_pdf(
    text: str,
    facts: dict[str, Any],
    dossier: DossierFacts,
    options: Options,
    hint: Side | None,
    note: str,
) -> Recognition:
    if not text.strip():
        return Recognition(None, f"pdf-no-text: no text layer (a scan?){note}", facts)
    guess = classify(text, dossier.ids, hint)
    facts |= {"kind": guess.kind or "", "confidence": guess.confidence}
    facts["evidence"] = list(guess.evidence)
    evidence = ", ".join(guess.evidence) or "no evidence"
    if guess.doc_type is None:
        reason = f"pdf-low-confidence: {guess.confidence:.2f}, no type proposed ({evidence})"
        return Recognition(None, reason + note, facts, text=text)
    if guess.confidence < options.pdf_min_confidence:
        threshold = f"{guess.confidence:.2f} < {options.pdf_min_confidence:.2f}"
        reason = f"pdf-low-confidence: {threshold} for {guess.doc_type.value} ({evidence})"
        return Recognition(None, reason + note, facts, text=text)
    reason = f"pdf-text: {guess.doc_type.value} with confidence {guess.confidence:.2f} ({evidence})"
    return Recognition(guess.doc_type, reason + note, facts, text=text)


def _hybrid(embedded: EmbeddedXml, dossier: DossierFacts, options: Options) -> Recognition:
    try:
        root = parse_xml(embedded.data)
    except NotXml as exc:
        return Recognition(None, str(exc))
    invoice = _invoice(root)
    if invoice is None:
        return Recognition(None, f"root {local_name(root)} is not an invoice")
    found = _checked(root, invoice, decide(invoice, dossier.ids), options)
    return Recognition(found.doc_type, found.reason, found.facts | {"embedded_xml": embedded.name})


def _pdf_facts(files: dict[str, bytes]) -> dict[str, Any]:
    return {"syntax": "pdf", "embedded_files": list(files)}


def _recognised(decision: Decision, facts: dict[str, Any]) -> Recognition:
    return Recognition(decision.doc_type, decision.reason, facts)


def _declared(filename: str, media_type: str) -> str:
    declared = ", ".join(part for part in (filename, media_type) if part)
    return f" (declared {declared})" if declared else ""
