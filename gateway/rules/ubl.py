"""Facts from a UBL 2.x Invoice or CreditNote, read as written: no arithmetic, no repair.

Values stay the strings the sender wrote (an amount of `1125` is not `1125.00`), so what we
store and show can always be found again in the file. A root that is not a UBL Invoice or
CreditNote raises `NotUbl`; the caller decides what else it might be.
"""

from __future__ import annotations

import functools
from typing import cast

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

_UBL = "urn:oasis:names:specification:ubl:schema:xsd:"
INVOICE = f"{{{_UBL}Invoice-2}}Invoice"
CREDIT_NOTE = f"{{{_UBL}CreditNote-2}}CreditNote"
NS = {"cbc": f"{_UBL}CommonBasicComponents-2", "cac": f"{_UBL}CommonAggregateComponents-2"}


class NotUbl(ValueError):
    """The root element is not a UBL Invoice or CreditNote."""

    def __init__(self, root_tag: str) -> None:
        super().__init__(f"root {root_tag} is not a UBL Invoice or CreditNote")
        self.root_tag = root_tag


def read_ubl(root: etree._Element) -> InvoiceFacts:
    """Read the facts of a UBL document; raise `NotUbl` for any other root.

    `kind` is what the document declares (root element, then type code). Whether a negative
    invoice is booked as a credit note is a booking decision and is made elsewhere.
    """
    if root.tag not in (INVOICE, CREDIT_NOTE):
        raise NotUbl(str(root.tag))
    credit_root = root.tag == CREDIT_NOTE
    pdf = embedded_pdf(root)
    type_code = _text(root, "cbc:CreditNoteTypeCode" if credit_root else "cbc:InvoiceTypeCode")
    return InvoiceFacts(
        customization_id=_text(root, "cbc:CustomizationID"),
        profile_id=_text(root, "cbc:ProfileID"),
        type_code=type_code,
        kind="credit-note" if credit_root or type_code in CREDIT_TYPE_CODES else "invoice",
        number=_text(root, "cbc:ID"),
        issue_date=iso_date(_text(root, "cbc:IssueDate")),
        currency=_text(root, "cbc:DocumentCurrencyCode"),
        payable_amount=_text(root, "cac:LegalMonetaryTotal/cbc:PayableAmount"),
        supplier=_party(_find(root, "cac:AccountingSupplierParty/cac:Party")),
        customer=_party(_find(root, "cac:AccountingCustomerParty/cac:Party")),
        has_embedded_pdf=pdf is not None,
        pdf_placeholder=pdf is None and declares_pdf(root),
        pdf=pdf,
    )


def embedded_pdf(root: etree._Element) -> tuple[str, bytes] | None:
    """The first attached PDF as (file name, bytes), or None.

    Only content that really is a PDF counts: many examples declare `application/pdf` around a
    placeholder string or an empty element. The file name is reduced to a plain base name.
    """
    for reference in _all(root, "cac:AdditionalDocumentReference"):
        binary = _find(reference, "cac:Attachment/cbc:EmbeddedDocumentBinaryObject")
        if binary is None or binary.get("mimeCode", "").strip().lower() != "application/pdf":
            continue
        content = pdf_from_base64(binary.text or "")
        if content is not None:
            return pdf_name(binary.get("filename", ""), _text(reference, "cbc:ID")), content
    return None


def declares_pdf(root: etree._Element) -> bool:
    """Some attachment says `application/pdf`, whatever its content turns out to be."""
    return any(
        binary.get("mimeCode", "").strip().lower() == "application/pdf"
        for binary in _all(
            root, "cac:AdditionalDocumentReference/cac:Attachment/cbc:EmbeddedDocumentBinaryObject"
        )
    )


def _party(party: etree._Element | None) -> Party:
    if party is None:
        return NO_PARTY
    return Party(
        name=_text(party, "cac:PartyName/cbc:Name")
        or _text(party, "cac:PartyLegalEntity/cbc:RegistrationName"),
        vat=_vat(party),
        company=_schemed(_find(party, "cac:PartyLegalEntity/cbc:CompanyID")),
        endpoint=_schemed(_find(party, "cbc:EndpointID")),
    )


def _vat(party: etree._Element) -> str:
    """The CompanyID of the VAT tax scheme; Swedish examples also list F-skatt under `TAX`."""
    for scheme in _all(party, "cac:PartyTaxScheme"):
        if _text(scheme, "cac:TaxScheme/cbc:ID").upper() in ("VAT", ""):
            vat = _text(scheme, "cbc:CompanyID")
            if vat:
                return vat
    return ""


def _schemed(element: etree._Element | None) -> SchemedId | None:
    if element is None or not (element.text or "").strip():
        return None
    return SchemedId(scheme=element.get("schemeID", "").strip(), value=(element.text or "").strip())


def _text(element: etree._Element, path: str) -> str:
    found = _find(element, path)
    return (found.text or "").strip() if found is not None else ""


def _find(element: etree._Element, path: str) -> etree._Element | None:
    found = _all(element, path)
    return found[0] if found else None


def _all(element: etree._Element, path: str) -> list[etree._Element]:
    return cast(list[etree._Element], _compiled(path)(element))


@functools.cache
def _compiled(path: str) -> etree.XPath:
    """Each path compiled once: a compiled XPath runs several times faster than `find`'s
    paths, and lxml's XPath objects may be shared between threads (they lock)."""
    return etree.XPath(path, namespaces=NS)
