"""Facts from a UN/CEFACT Cross Industry Invoice: EN 16931 (D16B), Factur-X, ZUGFeRD 1 and 2.

ZUGFeRD 1.0 (`CrossIndustryDocument`) and D16B (`CrossIndustryInvoice`) put the same facts under
different element names and namespaces, and both circulate inside PDFs today. Elements are
therefore found by local name along a short path of alternatives, which reads either generation
without two copies of the reader. Values are kept as written, as in `ubl.py`.
"""

from __future__ import annotations

from lxml import etree

from gateway.rules.attachments import pdf_from_base64, pdf_name
from gateway.rules.facts import (
    CREDIT_TYPE_CODES,
    NO_PARTY,
    InvoiceFacts,
    Party,
    SchemedId,
    iso_date,
)
from gateway.rules.xmlpath import find, find_all, local_name, namespace, text

ROOTS = {
    "CrossIndustryInvoice": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:",
    "CrossIndustryDocument": "urn:ferd:CrossIndustryDocument:invoice:",
}

_CONTEXT = "ExchangedDocumentContext|SpecifiedExchangedDocumentContext"
_HEADER = "ExchangedDocument|HeaderExchangedDocument"
_TRANSACTION = "SupplyChainTradeTransaction|SpecifiedSupplyChainTradeTransaction"
_AGREEMENT = f"{_TRANSACTION}/ApplicableHeaderTradeAgreement|ApplicableSupplyChainTradeAgreement"
_SETTLEMENT = f"{_TRANSACTION}/ApplicableHeaderTradeSettlement|ApplicableSupplyChainTradeSettlement"
_TOTALS = (
    f"{_SETTLEMENT}/SpecifiedTradeSettlementHeaderMonetarySummation"
    "|SpecifiedTradeSettlementMonetarySummation"
)


class NotCii(ValueError):
    """The root element is not a CII invoice."""

    def __init__(self, root_tag: str) -> None:
        super().__init__(f"root {root_tag} is not a CrossIndustryInvoice")
        self.root_tag = root_tag


def is_cii(root: etree._Element) -> bool:
    """By root name and namespace family, any version (D16B :100, ZUGFeRD 1 :1p0)."""
    expected = ROOTS.get(local_name(root))
    return expected is not None and namespace(root).startswith(expected)


def read_cii(root: etree._Element) -> InvoiceFacts:
    """Read the facts of a CII invoice; raise `NotCii` for any other root."""
    if not is_cii(root):
        raise NotCii(str(root.tag))
    type_code = text(root, f"{_HEADER}/TypeCode")
    return InvoiceFacts(
        customization_id=text(root, f"{_CONTEXT}/GuidelineSpecifiedDocumentContextParameter/ID"),
        profile_id=text(root, f"{_CONTEXT}/BusinessProcessSpecifiedDocumentContextParameter/ID"),
        type_code=type_code,
        kind="credit-note" if type_code in CREDIT_TYPE_CODES else "invoice",
        number=text(root, f"{_HEADER}/ID"),
        issue_date=iso_date(text(root, f"{_HEADER}/IssueDateTime/DateTimeString")),
        currency=text(root, f"{_SETTLEMENT}/InvoiceCurrencyCode"),
        payable_amount=text(root, f"{_TOTALS}/DuePayableAmount"),
        supplier=_party(find(root, f"{_AGREEMENT}/SellerTradeParty")),
        customer=_party(find(root, f"{_AGREEMENT}/BuyerTradeParty")),
        has_embedded_pdf=(pdf := embedded_pdf(root)) is not None,
        pdf_placeholder=pdf is None and declares_pdf(root),
        pdf=pdf,
        syntax="cii",
    )


def embedded_pdf(root: etree._Element) -> tuple[str, bytes] | None:
    """The first `AdditionalReferencedDocument` attachment that really is a PDF, named."""
    for document in find_all(root, f"{_AGREEMENT}/AdditionalReferencedDocument"):
        for binary in find_all(document, "AttachmentBinaryObject"):
            content = pdf_from_base64(binary.text or "")
            if content is not None:
                name = pdf_name(binary.get("filename", ""), text(document, "IssuerAssignedID"))
                return name, content
    return None


def declares_pdf(root: etree._Element) -> bool:
    """Some attachment says `application/pdf`, whatever its content turns out to be."""
    return any(
        binary.get("mimeCode", "").strip().lower() == "application/pdf"
        for binary in find_all(
            root, f"{_AGREEMENT}/AdditionalReferencedDocument/AttachmentBinaryObject"
        )
    )


def _party(party: etree._Element | None) -> Party:
    if party is None:
        return NO_PARTY
    return Party(
        name=text(party, "Name"),
        vat=next(
            (
                (registration.text or "").strip()
                for registration in find_all(party, "SpecifiedTaxRegistration/ID")
                if registration.get("schemeID", "").strip().upper() == "VA"
            ),
            "",
        ),
        company=_schemed(find(party, "SpecifiedLegalOrganization/ID")),
        endpoint=_schemed(find(party, "URIUniversalCommunication/URIID")),
    )


def _schemed(element: etree._Element | None) -> SchemedId | None:
    if element is None or not (element.text or "").strip():
        return None
    return SchemedId(scheme=element.get("schemeID", "").strip(), value=(element.text or "").strip())
