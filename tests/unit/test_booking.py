"""The booking input read from the corpus, and the mapping's pure decisions."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.booking.cii_invoice import invoice_from_cii
from gateway.booking.invoice import (
    Counterparty,
    InvoiceInput,
    InvoiceLine,
    TaxKey,
    UnreadableInvoice,
)
from gateway.booking.mapping import (
    PDF_MISSING,
    TAX_RATE_NOT_FOUND,
    BookingRefused,
    Mapping,
    admit,
    merged,
    parse_mapping,
    plan_invoice,
    rounding_account,
)
from gateway.booking.read import read_invoice
from gateway.booking.ubl_invoice import invoice_from_ubl
from gateway.config import ConfigError
from gateway.rules.xmlsafe import parse_xml


def _ubl_files(corpus: Path) -> list[Path]:
    return sorted((corpus / "peppol-bis3").glob("*.xml")) + sorted((corpus / "efff").glob("*.xml"))


def test_every_corpus_invoice_reads_into_lines_that_add_up(corpus: Path) -> None:
    """Lines sum to the net total and net + VAT to the gross total, on every corpus file but
    one whose line amounts carry four decimals (the rounding case the mapping balances)."""
    off = {}
    for path in _ubl_files(corpus):
        invoice = invoice_from_ubl(path.read_bytes())
        assert invoice.lines, path.name
        if invoice.lines_total != invoice.untaxed or invoice.untaxed + invoice.tax != invoice.total:
            off[path.name] = invoice.lines_total - invoice.untaxed
    assert off == {"UBLBE_BE0000000196_V01-15000019.xml": Decimal("-0.0010")}


def test_credit_note_is_negative_and_tax_categories_are_read(corpus: Path) -> None:
    credit = invoice_from_ubl(
        (corpus / "peppol-bis3" / "base-creditnote-correction.xml").read_bytes()
    )
    assert credit.credit_note
    assert (credit.untaxed, credit.tax, credit.total) == (
        Decimal(-1325),
        Decimal("-331.25"),
        Decimal("-1656.25"),
    )
    mixed = invoice_from_ubl((corpus / "efff" / "UBLBE_BE0000000196_V01-15000004.xml").read_bytes())
    assert {str(line.tax) for line in mixed.lines} == {"S:21", "S:12", "S:6", "Z:0"}
    old_style = corpus / "efff" / "efff_BE0505890632_160421_Inv_16117778.xml"
    assert [str(line.tax) for line in invoice_from_ubl(old_style.read_bytes()).lines] == ["S:21"]


def test_allowances_become_negative_lines(corpus: Path) -> None:
    invoice = invoice_from_ubl((corpus / "peppol-bis3" / "Allowance-example.xml").read_bytes())
    assert any(line.amount < 0 for line in invoice.lines)
    assert invoice.lines_total == invoice.untaxed


def test_every_corpus_cii_invoice_reads_into_lines_that_add_up(corpus: Path) -> None:
    read = {}
    for path in sorted((corpus / "en16931-cii").glob("*.xml")):
        try:
            invoice = read_invoice(parse_xml(path.read_bytes()))
        except UnreadableInvoice as exc:
            read[path.name] = str(exc).split(" is ")[-1]
            continue
        assert invoice.lines_total == invoice.untaxed, path.name
        assert invoice.untaxed + invoice.tax == invoice.total, path.name
        read[path.name] = invoice.currency
    assert read["CII_example1.xml"] == "EUR" and read["huf_example_cii.xml"] == "HUF"
    assert read["BR-CO-17.xml"] == "neither UBL nor CII; it cannot be booked"  # a test set
    example = invoice_from_cii(
        parse_xml((corpus / "en16931-cii" / "CII_example1.xml").read_bytes())
    )
    assert (example.number, example.issue_date) == ("12115118", dt.date(2015, 1, 9))
    assert (example.supplier.vat, example.supplier.company_number) == (
        "NL8200.98.395.B.01",
        "57151520",
    )
    assert example.customer.auxiliary_account == "10202"
    assert {str(line.tax) for line in example.lines} == {"S:6", "S:21"}


def test_not_an_invoice_is_unreadable() -> None:
    with pytest.raises(UnreadableInvoice, match="not a UBL Invoice"):
        invoice_from_ubl(b"<Statement/>")


@pytest.mark.parametrize(
    ("rate", "key"),
    [("21", "S:21"), ("21.00", "S:21"), ("5.5", "S:5.5"), ("0", "S:0"), ("20", "S:20")],
)
def test_tax_key_drops_trailing_zeros(rate: str, key: str) -> None:
    assert str(TaxKey("S", Decimal(rate))) == key


def _invoice(**changes: object) -> InvoiceInput:
    base: dict[str, object] = {
        "credit_note": False,
        "number": "F-1",
        "issue_date": dt.date(2026, 3, 1),
        "currency": "EUR",
        "supplier": Counterparty(name="Leverancier NV", vat="BE0765432146"),
        "customer": Counterparty(name="Klant BV"),
        "lines": (InvoiceLine("Widgets", Decimal(100), TaxKey("S", Decimal(21)), "6040"),),
        "untaxed": Decimal(100),
        "tax": Decimal(21),
        "total": Decimal(121),
    }
    return InvoiceInput(**{**base, **changes})  # type: ignore[arg-type]


MAPPING = Mapping(purchase_vat={"S:21": "BTW 21%"}, purchase_account="604")


@pytest.mark.parametrize(
    ("label", "line", "party"),
    [
        ("party_then_description", "Widgets", "Leverancier NV"),
        ("party", "Leverancier NV", "Leverancier NV"),
        ("party_and_description", "Leverancier NV - Widgets", "Leverancier NV"),
        ("party_and_number", "Leverancier NV - F-1", "Leverancier NV - F-1"),
    ],
)
def test_label_styles(label: str, line: str, party: str) -> None:
    plan = plan_invoice(
        _invoice(), "purchase_invoice", Mapping(**{**MAPPING.as_json(), "label": label})
    )
    assert (plan.lines[0].description, plan.description) == (line, party)


def test_plan_tries_the_documents_account_then_the_default() -> None:
    plan = plan_invoice(_invoice(), "purchase_invoice", MAPPING)
    assert plan.lines[0].accounts == ("6040", "604")
    assert (plan.invoice_type, plan.journal, plan.lines[0].tax) == ("in", "EXP", "BTW 21%")


def test_document_discounts_go_to_the_discount_account_when_kept_apart(corpus: Path) -> None:
    invoice = invoice_from_ubl((corpus / "peppol-bis3" / "Allowance-example.xml").read_bytes())
    vat = {str(line.tax): "tax" for line in invoice.lines}
    apart = Mapping(purchase_vat=vat, purchase_account="604", purchase_discount_account="608")
    planned = plan_invoice(invoice, "purchase_invoice", apart)
    discounts = [
        p.accounts for p, line in zip(planned.lines, invoice.lines, strict=True) if line.allowance
    ]
    assert discounts and all(accounts == ("608", "604") for accounts in discounts)
    deducted = plan_invoice(
        invoice, "purchase_invoice", Mapping(purchase_vat=vat, purchase_account="604")
    )
    assert all("608" not in p.accounts for p in deducted.lines)


def test_unmapped_vat_rate_is_refused_with_the_mapping_code() -> None:
    unmapped = _invoice(lines=(InvoiceLine("x", Decimal(1), TaxKey("S", Decimal(6))),))
    with pytest.raises(BookingRefused) as refused:
        plan_invoice(unmapped, "purchase_invoice", MAPPING)
    assert refused.value.code == TAX_RATE_NOT_FOUND
    assert refused.value.rejected
    assert "purchase_vat.S:6" in refused.value.text


def test_rounding_account_follows_the_side_and_the_sign() -> None:
    mapping = Mapping(debit_rounding_account="658", credit_rounding_account="758")
    assert rounding_account(mapping, "in", Decimal("0.01")) == "658"
    assert rounding_account(mapping, "in", Decimal("-0.01")) == "758"
    assert rounding_account(mapping, "out", Decimal("0.01")) == "758"
    assert rounding_account(mapping, "out", Decimal("-0.01")) == "658"


def test_admit_applies_scope_start_date_and_attachment_options() -> None:
    with pytest.raises(BookingRefused, match="scope is sales only") as refused:
        admit(_invoice(), "purchase_invoice", Mapping(scope="sales"), has_pdf=True)
    assert not refused.value.rejected
    with pytest.raises(BookingRefused, match="before the synchronisation start"):
        admit(_invoice(), "purchase_invoice", Mapping(start_date="2026-06-01"), has_pdf=True)
    with pytest.raises(BookingRefused) as waiting:
        admit(_invoice(), "purchase_invoice", Mapping(without_attachment=False), has_pdf=False)
    assert waiting.value.code == PDF_MISSING
    admit(_invoice(), "sales_credit_note", Mapping(scope="sales"), has_pdf=False)


def test_mapping_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as bad_key:
        parse_mapping({"purchase_vat": {"21%": "x"}}, "gw.toml", "integrations[0].mapping.")
    assert bad_key.value.key == "integrations[0].mapping.purchase_vat.21%"
    with pytest.raises(ConfigError, match="one of e-document, mapped"):
        parse_mapping({"mode": "both"}, "gw.toml")
    with pytest.raises(ConfigError, match="one of purchase_invoice"):
        parse_mapping({"journals": {"invoice": "EXP"}}, "gw.toml")


def test_dossier_override_merges_tables_key_by_key() -> None:
    base = {"purchase_vat": {"S:21": "A", "S:6": "B"}, "purchase_account": "604"}
    result = merged(base, {"purchase_vat": {"S:6": "C"}, "purchase_account": "6040"})
    assert result == {"purchase_vat": {"S:21": "A", "S:6": "C"}, "purchase_account": "6040"}
    assert parse_mapping(result, "x").purchase_vat == {"S:21": "A", "S:6": "C"}
