"""Plain PDFs: words and numbers in the text propose a type, with a confidence and a threshold."""

from __future__ import annotations

import pytest
from pdf_samples import text_pdf

from gateway.rules.pdftext import classify
from gateway.rules.recognize import DossierFacts, Options, recognize
from gateway.store.models import DocType

DOSSIER = "BE0123456749"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["FACTUUR 2024-001", "BTW klant: BE 0123.456.749"], DocType.PURCHASE_INVOICE),
        (["Facture n° 12", "N° TVA client : BE0123456749"], DocType.PURCHASE_INVOICE),
        (["Rechnung 4711", "Kunde USt-IdNr. BE 0123 456 749"], DocType.PURCHASE_INVOICE),
        (["Note de crédit 7", "TVA client BE 0123456749"], DocType.PURCHASE_CREDIT_NOTE),
        (["Gutschrift 7", "Kunde: BE0123456749"], DocType.PURCHASE_CREDIT_NOTE),
        (["Creditnota", "Klant BE0123456749"], DocType.PURCHASE_CREDIT_NOTE),
        (
            ["INVOICE", "Supplier VAT BE0123456749", "Customer VAT NL123456789B01"],
            DocType.SALES_INVOICE,
        ),
        (["INVOICE", "Our VAT: BE0123456749", "Bill to: NL123456789B01"], DocType.SALES_INVOICE),
    ],
)
def test_words_and_labelled_numbers_propose_a_type(lines: list[str], expected: DocType) -> None:
    found = recognize("scan.pdf", "", text_pdf(lines), DossierFacts(DOSSIER, ""))
    assert found.doc_type is expected, found.reason
    assert found.reason.startswith("pdf-text: ")


def test_without_the_dossier_number_it_stays_unrecognised() -> None:
    found = recognize(
        "x.pdf", "", text_pdf(["FACTUUR 1", "Klant BE0987654321"]), DossierFacts(DOSSIER, "")
    )
    assert found.doc_type is None
    assert found.reason.startswith("pdf-low-confidence: 0.50, no type proposed (")
    assert found.facts["kind"] == "invoice"


def test_the_threshold_is_configurable() -> None:
    data = text_pdf(["FACTUUR 1", "Klant: BE 0123 456 749"])
    strict = recognize("x.pdf", "", data, DossierFacts(DOSSIER, ""), Options(pdf_min_confidence=1))
    assert strict.reason.startswith("pdf-low-confidence: 0.90 < 1.00 for purchase_invoice (")
    lenient = recognize("x.pdf", "", data, DossierFacts(DOSSIER, ""))
    assert lenient.doc_type is DocType.PURCHASE_INVOICE
    assert "confidence 0.90" in lenient.reason


def test_without_a_side_there_is_no_proposal_at_any_threshold() -> None:
    data = text_pdf(["FACTUUR 1", "BE 0123 456 749", "NL123456789B01"])
    found = recognize("x.pdf", "", data, DossierFacts(DOSSIER, ""), Options(pdf_min_confidence=0))
    assert found.doc_type is None
    assert "side unknown" in found.reason


def test_a_quotation_is_not_proposed_as_an_invoice() -> None:
    guess = classify("Offerte / factuur volgt\nKlant: BE0123456749", [DOSSIER])
    assert guess.confidence < 0.85
    assert "not-to-book word 'offerte'" in guess.evidence


def test_company_number_without_country_is_found() -> None:
    guess = classify("Invoice\nCustomer company number 0123.456.749", ["", "0123456749"])
    assert guess.doc_type is DocType.PURCHASE_INVOICE
    assert guess.confidence == 0.9


def test_a_pdf_without_text_says_so() -> None:
    found = recognize("scan.pdf", "", text_pdf([]), DossierFacts(DOSSIER, ""))
    assert found.reason.startswith("pdf-no-text: ")


def test_a_hint_stands_in_for_a_missing_label() -> None:
    data = text_pdf(["FACTUUR 1", "BE 0123 456 749", "NL123456789B01"])
    found = recognize("x.pdf", "", data, DossierFacts(DOSSIER, ""), hint="sales")
    assert found.doc_type is DocType.SALES_INVOICE
    assert "sales side by hint" in found.reason


def test_a_label_overrules_the_hint() -> None:
    data = text_pdf(["FACTUUR 1", "Klant: BE 0123 456 749"])
    found = recognize("x.pdf", "", data, DossierFacts(DOSSIER, ""), hint="sales")
    assert found.doc_type is DocType.PURCHASE_INVOICE
    assert "hint 'sales' overruled by the label" in found.reason


def test_a_hint_never_changes_a_structured_document() -> None:
    ubl = b"""<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
      xmlns:cac="urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
      xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">
      <cbc:ID>1</cbc:ID>
      <cac:AccountingCustomerParty><cac:Party><cac:PartyTaxScheme>
        <cbc:CompanyID>BE0123456749</cbc:CompanyID><cac:TaxScheme><cbc:ID>VAT</cbc:ID></cac:TaxScheme>
      </cac:PartyTaxScheme></cac:Party></cac:AccountingCustomerParty></Invoice>"""
    found = recognize("x.xml", "", ubl, DossierFacts(DOSSIER, ""), hint="sales")
    assert found.doc_type is DocType.PURCHASE_INVOICE
