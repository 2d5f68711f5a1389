"""The rules stage on a real SQLite store: visuals, one document per invoice, duplicates."""

from __future__ import annotations

import asyncio
import io
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from corpus_dir import CORPUS
from pdf_samples import text_pdf
from pypdf import PdfReader
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

import gateway.pipeline.write
import gateway.rules.stage
from gateway.config import DeliverySettings, DossierSettings, IntegrationEntry
from gateway.intake.accept import Envelope, accept_message
from gateway.office import put_dossier, put_integration
from gateway.pipeline.policy_store import put_rule
from gateway.pipeline.runner import PipelineRunner
from gateway.rules.policy import Rule, make_rule
from gateway.store.db import Store, open_store, upgrade
from gateway.store.models import Delivery, DocType, Document, Message

ADDRESS = "acme@docs.example"
BUYER_FR = "FR19787878784"


@pytest.fixture
def store(tmp_path: Path, corpus: Path) -> Store:
    store = open_store(f"sqlite:///{tmp_path}/p.db", tmp_path / "blobs")
    upgrade(store.engine)
    with store.session.begin() as session:
        put_integration(
            session, IntegrationEntry("drop", "directory", {"path": str(tmp_path / "out")}), "t"
        )
    return store


def dossier(store: Store, vat: str, auto_send: bool = True) -> None:
    spec = DossierSettings("acme", "drop", vat=vat, addresses=[ADDRESS], auto_send=auto_send)
    with store.session.begin() as session:
        put_dossier(session, spec)


def deliver(store: Store, *attachments: tuple[str, bytes, str], subject: str = "docs") -> None:
    msg = EmailMessage()
    msg["From"] = "client@example.com"
    msg["To"] = ADDRESS
    msg["Subject"] = subject
    msg.set_content("attached")
    for filename, data, media_type in attachments:
        maintype, subtype = media_type.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    accept_message(store, msg.as_bytes(), Envelope("smtp", "client@example.com", [ADDRESS]))
    runner = PipelineRunner(store, DeliverySettings(), asyncio.Event())
    assert runner.process_batch() == 1


def documents(store: Store) -> list[Document]:
    with store.session() as session:
        return list(session.scalars(select(Document).order_by(Document.id)))


def deliveries(store: Store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(Delivery)) or 0


def corpus_bytes(relative: str) -> bytes:
    return (CORPUS / relative).read_bytes()


UBL_BE = "efff/UBLBE_BE0000000196_V01-15000001.xml"
UBL_BE_BUYER = "BE0000000295"


def test_embedded_pdf_is_kept_as_the_visual(store: Store) -> None:
    dossier(store, UBL_BE_BUYER)
    deliver(store, ("inv.xml", corpus_bytes(UBL_BE), "application/xml"))
    (doc,) = documents(store)
    assert doc.doc_type is DocType.PURCHASE_INVOICE, doc.reason
    assert doc.visual_sha256 is not None
    assert store.blobs.get(doc.visual_sha256).startswith(b"%PDF-")
    assert doc.visual_filename.endswith(".pdf")


def test_ubl_and_its_pdf_in_one_mail_are_one_document(store: Store) -> None:
    dossier(store, "SE4598375937")
    pdf = corpus_bytes("facturx/MustangGnuaccountingBeispielRE-20201121_508blanko.pdf")
    deliver(
        store,
        ("base-example.xml", corpus_bytes("peppol-bis3/base-example.xml"), "application/xml"),
        ("Base-Example.pdf", pdf, "application/pdf"),
    )
    (doc,) = documents(store)
    assert doc.filename == "base-example.xml"
    assert doc.visual_filename == "Base-Example.pdf"
    assert doc.visual_sha256 is not None
    assert store.blobs.get(doc.visual_sha256) == pdf


def test_factur_x_and_its_xml_in_one_mail_are_one_document(store: Store) -> None:
    dossier(store, BUYER_FR)
    pdf = corpus_bytes("facturx/Facture_FR_EN16931.pdf")
    xml = PdfReader(io.BytesIO(pdf)).attachments["factur-x.xml"][0]
    deliver(store, ("a.pdf", pdf, "application/pdf"), ("factur-x.xml", xml, "application/xml"))
    (doc,) = documents(store)
    assert doc.filename == "factur-x.xml"
    assert doc.doc_type is DocType.PURCHASE_INVOICE
    assert doc.visual_filename == "a.pdf"


def test_an_unrelated_pdf_stays_its_own_document(store: Store) -> None:
    dossier(store, "SE4598375937")
    deliver(
        store,
        ("base-example.xml", corpus_bytes("peppol-bis3/base-example.xml"), "application/xml"),
        ("other.pdf", corpus_bytes("facturx/corruptedV2PDF.pdf"), "application/pdf"),
    )
    assert [d.filename for d in documents(store)] == ["base-example.xml", "other.pdf"]


def test_the_same_file_twice_is_a_duplicate_and_is_not_sent(store: Store) -> None:
    dossier(store, "SE4598375937")
    invoice = corpus_bytes("peppol-bis3/base-example.xml")
    deliver(store, ("base-example.xml", invoice, "application/xml"))
    deliver(store, ("again.xml", invoice, "application/xml"), subject="again")
    first, second = documents(store)
    assert first.duplicate_of_id is None
    assert second.duplicate_of_id == first.id
    assert second.status_reason == f"duplicate of document {first.id} (same file)"
    assert deliveries(store) == 1


def test_the_same_invoice_in_another_syntax_is_a_duplicate(store: Store) -> None:
    """The FNFE sample is one invoice in several Factur-X profiles: other bytes, same identity."""
    dossier(store, BUYER_FR)
    deliver(store, ("basic.pdf", corpus_bytes("facturx/Facture_FR_BASIC.pdf"), "application/pdf"))
    deliver(store, ("full.pdf", corpus_bytes("facturx/Facture_FR_EN16931.pdf"), "application/pdf"))
    first, second = documents(store)
    assert second.duplicate_of_id == first.id
    assert "same supplier, number and type" in second.status_reason
    assert deliveries(store) == 1


def test_a_duplicate_links_to_the_first_not_to_the_previous(store: Store) -> None:
    dossier(store, "SE4598375937", auto_send=False)
    invoice = corpus_bytes("peppol-bis3/base-example.xml")
    for n in range(3):
        deliver(store, (f"{n}.xml", invoice, "application/xml"), subject=str(n))
    first, *rest = documents(store)
    assert [d.duplicate_of_id for d in rest] == [first.id, first.id]


def test_duplicates_are_per_dossier(store: Store) -> None:
    dossier(store, "SE4598375937")
    invoice = corpus_bytes("peppol-bis3/base-example.xml")
    deliver(store, ("a.xml", invoice, "application/xml"))
    with store.session.begin() as session:
        put_dossier(
            session,
            DossierSettings("other", "drop", vat="GB1232434", addresses=["o@docs.example"]),
        )
    msg = EmailMessage()
    msg["To"] = "o@docs.example"
    msg.add_attachment(invoice, maintype="application", subtype="xml", filename="a.xml")
    accept_message(store, msg.as_bytes(), Envelope("smtp", "c@example.com", ["o@docs.example"]))
    PipelineRunner(store, DeliverySettings(), asyncio.Event()).process_batch()
    assert [d.duplicate_of_id for d in documents(store)] == [None, None]


def run_with_rules(store: Store, rules: list[Rule], *attachments: tuple[str, bytes, str]) -> None:
    msg = EmailMessage()
    msg["From"] = "client@example.com"
    msg["To"] = ADDRESS
    msg["Subject"] = "with rules"
    for filename, data, media_type in attachments:
        maintype, subtype = media_type.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    accept_message(store, msg.as_bytes(), Envelope("smtp", "client@example.com", [ADDRESS]))
    PipelineRunner(store, DeliverySettings(), asyncio.Event(), rules=rules).process_batch()


def test_rules_type_documents_and_record_why(store: Store) -> None:
    dossier(store, "BE0123456749")
    rules = [make_rule("telecom", {"sender": "*@example.com"}, {"set_type": "purchase_invoice"})]
    invoice = corpus_bytes("peppol-bis3/base-example.xml")
    run_with_rules(store, rules, ("base-example.xml", invoice, "application/xml"))
    (doc,) = documents(store)
    assert doc.doc_type is DocType.PURCHASE_INVOICE
    assert doc.reason.startswith(
        "rule telecom: type purchase_invoice (sender='client@example.com')"
    )
    assert [m["rule"] for m in doc.matched_rules] == ["telecom"]
    assert deliveries(store) == 1


def test_dropped_and_quarantined_documents_are_kept_and_not_sent(store: Store) -> None:
    dossier(store, "SE4598375937")
    with store.session.begin() as session:
        put_rule(session, make_rule("no-pdf", {"syntax": "pdf"}, {"drop": True}, dossier="acme"))
    rules = [make_rule("hold", {"filename": "*.xml"}, {"quarantine": True})]
    run_with_rules(
        store,
        rules,
        ("base-example.xml", corpus_bytes("peppol-bis3/base-example.xml"), "application/xml"),
        ("scan.pdf", corpus_bytes("facturx/corruptedV2PDF.pdf"), "application/pdf"),
    )
    xml, pdf = documents(store)
    assert xml.doc_type is DocType.PURCHASE_INVOICE
    assert xml.status_reason == "quarantined by rule hold"
    assert (pdf.archived, pdf.status_reason) == (True, "dropped by rule no-pdf")
    assert pdf.matched_rules[0]["level"] == "dossier acme"
    assert deliveries(store) == 0


def test_the_pdf_of_an_earlier_e_fff_sent_alone_is_a_duplicate(store: Store) -> None:
    """Exact Online's e-FFF embeds its PDF; the client then forwards that PDF on its own."""
    dossier(store, "BE0882555389")
    efff = corpus_bytes("efff/efff_BE0505890632_160421_Inv_16117778.xml")
    deliver(store, ("16117778.xml", efff, "application/xml"))
    (first,) = documents(store)
    assert first.doc_type is DocType.PURCHASE_INVOICE
    assert first.visual_sha256 is not None
    pdf = store.blobs.get(first.visual_sha256)
    deliver(store, ("factuur.pdf", pdf, "application/pdf"), subject="the pdf")
    _, second = documents(store)
    assert second.duplicate_of_id == first.id
    assert "its number and supplier VAT are in the text" in second.status_reason


def test_a_pdf_of_another_supplier_with_the_same_number_is_not_a_duplicate(store: Store) -> None:
    dossier(store, "BE0882555389")
    deliver(
        store,
        (
            "a.xml",
            corpus_bytes("efff/efff_BE0505890632_160421_Inv_16117778.xml"),
            "application/xml",
        ),
    )
    other = text_pdf(["Factuur 16117778", "Leverancier BTW BE 0987.654.321"])
    deliver(store, ("other.pdf", other, "application/pdf"), subject="other")
    assert [d.duplicate_of_id for d in documents(store)] == [None, None]


def test_a_failing_part_sets_the_whole_message_aside_and_the_next_goes_on(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Injected fault: recognition raises on one file; nothing of that message is half-made."""
    dossier(store, "SE4598375937")
    real = gateway.rules.stage.recognize

    def failing(filename: str, *args: Any, **kwargs: Any) -> Any:
        if filename == "boom.xml":
            raise RuntimeError("injected")
        return real(filename, *args, **kwargs)

    monkeypatch.setattr(gateway.rules.stage, "recognize", failing)
    invoice = corpus_bytes("peppol-bis3/base-example.xml")
    deliver(store, ("ok.xml", invoice, "application/xml"), ("boom.xml", b"<x/>", "application/xml"))
    deliver(store, ("later.xml", invoice, "application/xml"), subject="later")
    assert [d.filename for d in documents(store)] == ["later.xml"]
    with store.session() as session:
        first = session.scalars(select(Message).order_by(Message.id)).first()
        assert first is not None
        assert (first.verdict, first.reason) == ("failed", "internal-error: RuntimeError: injected")
    assert deliveries(store) == 1


def test_a_database_error_leaves_the_message_for_the_next_pass(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    dossier(store, "SE4598375937")
    real = gateway.pipeline.write.find_originals

    def unavailable(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr(gateway.pipeline.write, "find_originals", unavailable)
    with pytest.raises(OperationalError):
        deliver(store, ("a.xml", corpus_bytes("peppol-bis3/base-example.xml"), "application/xml"))
    assert documents(store) == []
    monkeypatch.setattr(gateway.pipeline.write, "find_originals", real)
    assert PipelineRunner(store, DeliverySettings(), asyncio.Event()).process_batch() == 1
    assert [d.filename for d in documents(store)] == ["a.xml"]
