"""A PDF without structure: what its text says it is, and how sure that is.

Evidence is scored, never trusted alone: a title word (invoice or credit note, in Dutch,
French, English or German) says what kind of document it is; the dossier's VAT or company
number in the text says it concerns the dossier; a label next to that number ("klant",
"client", "Kunde" or "leverancier", "fournisseur", "Lieferant") says on which side. Words that
mark a document that is not to be booked (quotation, order, delivery note, pro forma,
reminder) count against. The caller compares the score with the configured threshold; below
it the document stays unrecognised with the evidence spelled out.

Scores: kind word 0.4, dossier number 0.3, side label 0.2, another party's VAT number 0.1;
a not-to-book word takes 0.3 off. The side comes from a label at the dossier's number, or
from the opposite label at another party's number; without it there is no proposal at all,
whatever the score: purchase or sales is never guessed (the corpus's own sample invoices show
the seller's number alone, which a purchase default would book in the wrong journal).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.rules.facts import Kind
from gateway.rules.vat import normalize_vat, same_party
from gateway.store.models import DocType

_CREDIT = re.compile(
    r"\b(credit\s*nota|kredietnota|creditfactuur|note\s+de\s+credit|facture\s+d'avoir|avoir"
    r"|credit\s+note|credit\s+memo|gutschrift|rechnungskorrektur|stornorechnung)\b"
)
_INVOICE = re.compile(r"\b(factuur|facture|invoice|rechnung)\b")
_NOT_TO_BOOK = re.compile(
    r"\b(offerte|devis|quotation|angebot|bestelbon|bon\s+de\s+commande|purchase\s+order"
    r"|bestellung|pakbon|leveringsbon|bon\s+de\s+livraison|delivery\s+note|lieferschein"
    r"|pro\s*-?\s*forma|herinnering|betalingsherinnering|rappel|reminder|mahnung)\b"
)
_CUSTOMER = re.compile(
    r"(klant|afnemer|client|acheteur|destinataire|customer|buyer|bill\s*to|invoice\s*to"
    r"|kunde|rechnungsempf|uw\s+btw|votre\s+.{0,4}tva|your\s+vat|ihre\s+ust)"
)
_SUPPLIER = re.compile(
    r"(leverancier|verkoper|fournisseur|vendeur|supplier|seller|lieferant|verkaufer"
    r"|onze\s+btw|notre\s+.{0,4}tva|our\s+vat|unsere\s+ust)"
)
# Belgian numbers are written in groups (BE 0123.456.749); elsewhere only dots may separate,
# so that a date or an amount after the number is never read as part of it.
_VAT_LIKE = re.compile(
    r"\b(BE)[ .]?([01]?\d{3}[ .]?\d{3}[ .]?\d{3})\b"
    r"|\b(AT|BG|CY|CZ|DE|DK|EE|EL|ES|FI|FR|GB|HR|HU|IE|IT|LT|LU|LV|MT|NL|PL|PT|RO|SE|SI|SK)"
    r" ?(U?[0-9][0-9A-Z.]{7,16})\b"
)
_SEPARATORS = re.compile(r"[\s.\-/]+")

Side = Literal["purchase", "sales"]

KIND_SCORE, DOSSIER_SCORE, SIDE_SCORE, OTHER_PARTY_SCORE, NOT_TO_BOOK_PENALTY = (
    0.4,
    0.3,
    0.2,
    0.1,
    0.3,
)


@dataclass(frozen=True)
class TextGuess:
    kind: Kind | None
    doc_type: DocType | None
    confidence: float
    evidence: tuple[str, ...]


def classify(text: str, dossier_ids: Sequence[str], hint: Side | None = None) -> TextGuess:
    """`hint` is the side the sender declared outside the document (an intake address such as
    `slug+purchase@`); it stands in for a missing label and never overrides one."""
    folded = _fold(text)
    evidence: list[str] = []
    score = 0.0
    kind: Kind | None = None
    if match := _CREDIT.search(folded):
        kind, score = "credit-note", score + KIND_SCORE
        evidence.append(f"credit-note word {match.group(0)!r}")
    elif match := _INVOICE.search(folded):
        kind, score = "invoice", score + KIND_SCORE
        evidence.append(f"invoice word {match.group(0)!r}")
    if match := _NOT_TO_BOOK.search(folded):
        score -= NOT_TO_BOOK_PENALTY
        evidence.append(f"not-to-book word {match.group(0)!r}")
    wanted = [normalize_vat(value) for value in dossier_ids if normalize_vat(value)]
    side, found = _dossier_side(folded, wanted)
    if found:
        score += DOSSIER_SCORE
        evidence.append(f"dossier number {found}")
    if side:
        score += SIDE_SCORE
        evidence.append(f"{side} side by label")
        if hint and hint != side:
            evidence.append(f"hint {hint!r} overruled by the label")
    elif hint and found:
        side, score = hint, score + SIDE_SCORE
        evidence.append(f"{hint} side by hint")
    others = _other_parties(folded, wanted)
    if others:
        score += OTHER_PARTY_SCORE
        evidence.append(f"other party {others[0]}")
    if kind and found and not side:
        evidence.append("no customer/supplier label: side unknown")
    doc_type = _doc_type(kind, side) if kind and found and side else None
    return TextGuess(kind, doc_type, round(max(score, 0.0), 2), tuple(evidence))


def _doc_type(kind: Kind, side: Side) -> DocType:
    credit = kind == "credit-note"
    if side == "sales":
        return DocType.SALES_CREDIT_NOTE if credit else DocType.SALES_INVOICE
    return DocType.PURCHASE_CREDIT_NOTE if credit else DocType.PURCHASE_INVOICE


def _fold(text: str) -> str:
    """Lower case without accents: `Crédit` and `credit`, `Verkäufer` and `verkaufer` agree."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def _dossier_side(folded: str, wanted: Sequence[str]) -> tuple[Side | None, str]:
    """(the dossier's side, the dossier number as matched), from the labels on the line of a
    number or the line before: a customer label at the dossier's number makes a purchase, a
    customer label at another party's number a sale, and the other way round for suppliers."""
    forms = sorted({form for value in wanted for form in _forms(value)}, key=len, reverse=True)
    lines = folded.splitlines()
    found = ""
    side: Side | None = None
    for index, line in enumerate(lines):
        label = _label(" ".join(lines[max(index - 1, 0) : index + 1]))
        compact = _SEPARATORS.sub("", line).upper()
        hit = next((form for form in forms if form in compact), "")
        found = found or hit
        if label and hit:
            return ("purchase" if label == "customer" else "sales"), hit
        if label and not side and _other_parties(line, wanted):
            side = "sales" if label == "customer" else "purchase"
    return (side if found else None), found


def _label(context: str) -> str:
    if _CUSTOMER.search(context):
        return "customer"
    return "supplier" if _SUPPLIER.search(context) else ""


def _forms(number: str) -> tuple[str, ...]:
    """The number with and without its country prefix; bare digits only when long enough."""
    bare = number[2:] if number[:2].isalpha() else number
    return (number, bare) if len(bare) >= 8 else (number,)


def _other_parties(folded: str, wanted: Sequence[str]) -> list[str]:
    found = []
    for match in _VAT_LIKE.finditer(folded.upper()):
        country, digits = (match.group(1), match.group(2)) if match.group(1) else match.group(3, 4)
        number = normalize_vat(country + _SEPARATORS.sub("", digits))
        digits = sum(char.isdigit() for char in number)
        if digits >= 8 and not any(same_party(number, value) for value in wanted):
            found.append(number)
    return found
