"""Facts from a UBL 2.x Invoice or CreditNote, read as written: no arithmetic, no repair.

Values stay the strings the sender wrote (an amount of `1125` is not `1125.00`), so what we
store and show can always be found again in the file. A root that is not a UBL Invoice or
CreditNote raises `NotUbl`; the caller decides what else it might be.
"""

from __future__ import annotations

from lxml import etree

from gateway.rules.attachments import pdf_from_base64, pdf_name
from gateway.rules.childpaths import ChildPaths, Found
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


_TYPE_CODE = {INVOICE: "cbc:InvoiceTypeCode", CREDIT_NOTE: "cbc:CreditNoteTypeCode"}
_REFERENCE = "cac:AdditionalDocumentReference"
_BINARY = "cac:Attachment/cbc:EmbeddedDocumentBinaryObject"
_ROOT = ChildPaths(
    [
        "cbc:CustomizationID",
        "cbc:ProfileID",
        *_TYPE_CODE.values(),
        "cbc:ID",
        "cbc:IssueDate",
        "cbc:DocumentCurrencyCode",
        "cac:LegalMonetaryTotal/cbc:PayableAmount",
        "cac:AccountingSupplierParty/cac:Party",
        "cac:AccountingCustomerParty/cac:Party",
        _REFERENCE,
        f"{_REFERENCE}/{_BINARY}",
    ],
    NS,
)
_ATTACHED = ChildPaths([_REFERENCE], NS)
_ATTACHMENT = ChildPaths([_BINARY, "cbc:ID"], NS)
_PARTY = ChildPaths(
    [
        "cac:PartyName/cbc:Name",
        "cac:PartyLegalEntity/cbc:RegistrationName",
        "cac:PartyLegalEntity/cbc:CompanyID",
        "cbc:EndpointID",
        "cac:PartyTaxScheme",
    ],
    NS,
)
_TAX_SCHEME = ChildPaths(["cac:TaxScheme/cbc:ID", "cbc:CompanyID"], NS)


def read_ubl(root: etree._Element) -> InvoiceFacts:
    """Read the facts of a UBL document; raise `NotUbl` for any other root.

    `kind` is what the document declares (root element, then type code). Whether a negative
    invoice is booked as a credit note is a booking decision and is made elsewhere.
    """
    if root.tag not in (INVOICE, CREDIT_NOTE):
        raise NotUbl(str(root.tag))
    found = _ROOT.read(root)
    pdf = _embedded_pdf(found.all(_REFERENCE))
    type_code = found.text(_TYPE_CODE[root.tag])
    credit = root.tag == CREDIT_NOTE or type_code in CREDIT_TYPE_CODES
    return InvoiceFacts(
        customization_id=found.text("cbc:CustomizationID"),
        profile_id=found.text("cbc:ProfileID"),
        type_code=type_code,
        kind="credit-note" if credit else "invoice",
        number=found.text("cbc:ID"),
        issue_date=iso_date(found.text("cbc:IssueDate")),
        currency=found.text("cbc:DocumentCurrencyCode"),
        payable_amount=found.text("cac:LegalMonetaryTotal/cbc:PayableAmount"),
        supplier=_party(found.first("cac:AccountingSupplierParty/cac:Party")),
        customer=_party(found.first("cac:AccountingCustomerParty/cac:Party")),
        has_embedded_pdf=pdf is not None,
        pdf_placeholder=pdf is None and _declares_pdf(found.all(f"{_REFERENCE}/{_BINARY}")),
        pdf=pdf,
    )


def embedded_pdf(root: etree._Element) -> tuple[str, bytes] | None:
    """The first attached PDF as (file name, bytes), or None.

    Only content that really is a PDF counts: many examples declare `application/pdf` around a
    placeholder string or an empty element. The file name is reduced to a plain base name.
    """
    return _embedded_pdf(_ATTACHED.read(root).all(_REFERENCE))


def _embedded_pdf(references: list[etree._Element]) -> tuple[str, bytes] | None:
    for reference in references:
        found = _ATTACHMENT.read(reference)
        binary = found.first(_BINARY)
        if binary is None or not _says_pdf(binary):
            continue
        content = pdf_from_base64(binary.text or "")
        if content is not None:
            return pdf_name(binary.get("filename", ""), found.text("cbc:ID")), content
    return None


def _declares_pdf(binaries: list[etree._Element]) -> bool:
    """Some attachment says `application/pdf`, whatever its content turns out to be."""
    return any(_says_pdf(binary) for binary in binaries)


def _says_pdf(binary: etree._Element) -> bool:
    return binary.get("mimeCode", "").strip().lower() == "application/pdf"


def _party(party: etree._Element | None) -> Party:
    if party is None:
        return NO_PARTY
    found = _PARTY.read(party)
    return Party(
        name=found.text("cac:PartyName/cbc:Name")
        or found.text("cac:PartyLegalEntity/cbc:RegistrationName"),
        vat=_vat(found),
        company=_schemed(found.first("cac:PartyLegalEntity/cbc:CompanyID")),
        endpoint=_schemed(found.first("cbc:EndpointID")),
    )


def _vat(party: Found) -> str:
    """The CompanyID of the VAT tax scheme; Swedish examples also list F-skatt under `TAX`."""
    for scheme in party.all("cac:PartyTaxScheme"):
        found = _TAX_SCHEME.read(scheme)
        if found.text("cac:TaxScheme/cbc:ID").upper() in ("VAT", ""):
            vat = found.text("cbc:CompanyID")
            if vat:
                return vat
    return ""


def _schemed(element: etree._Element | None) -> SchemedId | None:
    if element is None or not (element.text or "").strip():
        return None
    return SchemedId(scheme=element.get("schemeID", "").strip(), value=(element.text or "").strip())
