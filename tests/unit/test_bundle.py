"""Which PDF of a mail is the visual of which structured document, and which is not."""

from __future__ import annotations

from typing import Any

from gateway.rules.bundle import Item, pair_visuals, pdf_shows
from gateway.rules.recognize import Recognition

INVOICE: dict[str, Any] = {
    "syntax": "ubl",
    "kind": "invoice",
    "number": "F2024-017",
    "supplier": {"vat": "BE0987654321"},
}


def xml(name: str, **facts: Any) -> Item:
    return Item(name, Recognition(None, "party-mismatch", INVOICE | facts))


def pdf(name: str, text: str = "", kind: str = "") -> Item:
    return Item(
        name, Recognition(None, "pdf-low-confidence", {"syntax": "pdf", "kind": kind}, text=text)
    )


def test_same_stem_pairs_even_without_text() -> None:
    assert pair_visuals([xml("F2024-017.xml"), pdf("f2024-017.PDF")]) == {1: 0}


def test_number_in_the_text_pairs() -> None:
    assert pair_visuals([pdf("scan.pdf", "Factuur F2024-017\nTotaal"), xml("ubl.xml")]) == {0: 1}


def test_a_number_inside_a_longer_one_does_not_pair() -> None:
    assert pair_visuals([xml("ubl.xml"), pdf("scan.pdf", "Factuur F2024-0171")]) == {}


def test_a_credit_note_quoting_the_invoice_is_not_its_visual() -> None:
    credit = pdf("cn.pdf", "Creditnota CN-3 voor factuur F2024-017", kind="credit-note")
    assert pair_visuals([xml("ubl.xml"), credit]) == {}


def test_one_pdf_per_document_and_stem_first() -> None:
    items = [
        xml("a.xml"),
        xml("b.xml", number="F2024-018"),
        pdf("b.pdf", "F2024-017"),
        pdf("other.pdf", "F2024-017"),
    ]
    assert pair_visuals(items) == {2: 1, 3: 0}


def test_hybrid_pdf_pairs_by_number_and_supplier() -> None:
    hybrid = Item("fx.pdf", Recognition(None, "", INVOICE | {"syntax": "cii", "container": "pdf"}))
    other = Item(
        "fx2.pdf",
        Recognition(None, "", INVOICE | {"container": "pdf", "supplier": {"vat": "FR11999999998"}}),
    )
    assert pair_visuals([xml("u.xml"), other, hybrid]) == {2: 0}


def test_pdf_shows_needs_number_and_supplier() -> None:
    text = "Invoice F2024-017\nVAT BE 0987.654.321"
    assert pdf_shows(text, "F2024-017", ["BE0987654321"])
    assert not pdf_shows(text, "F2024-017", ["BE0123456749"])
    assert not pdf_shows(text, "F2024-018", ["BE0987654321"])
