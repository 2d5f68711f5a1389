"""Facts from a UBL 2.x Invoice or CreditNote, read as written: no arithmetic, no repair.

Values stay the strings the sender wrote (an amount of `1125` is not `1125.00`), so what we
store and show can always be found again in the file. A root that is not a UBL Invoice or
CreditNote raises `NotUbl`; the caller decides what else it might be.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from lxml import etree

_UBL = "urn:oasis:names:specification:ubl:schema:xsd:"
INVOICE = f"{{{_UBL}Invoice-2}}Invoice"
CREDIT_NOTE = f"{{{_UBL}CreditNote-2}}CreditNote"
NS = {"cbc": f"{_UBL}CommonBasicComponents-2", "cac": f"{_UBL}CommonAggregateComponents-2"}

# UNTDID 1001 codes EN 16931 accepts for credit notes; an Invoice root may carry them too.
CREDIT_TYPE_CODES = frozenset(
    {"81", "83", "261", "262", "296", "308", "381", "396", "420", "458", "532"}
)

Kind = Literal["invoice", "credit-note"]

_UNSAFE_NAME = re.compile(r"[^\w.-]+")


class NotUbl(ValueError):
    """The root element is not a UBL Invoice or CreditNote."""

    def __init__(self, root_tag: str) -> None:
        super().__init__(f"root {root_tag} is not a UBL Invoice or CreditNote")
        self.root_tag = root_tag


@dataclass(frozen=True)
class SchemedId:
    """An identifier and the scheme that gives it meaning (EAS/ICD code such as 0208)."""

    scheme: str
    value: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.value}" if self.scheme else self.value


@dataclass(frozen=True)
class Party:
    name: str
    vat: str
    company: SchemedId | None
    endpoint: SchemedId | None

    def as_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "vat": self.vat,
            "company_number": self.company.value if self.company else "",
            "company_scheme": self.company.scheme if self.company else "",
            "endpoint": str(self.endpoint) if self.endpoint else "",
        }


@dataclass(frozen=True)
class UblFacts:
    customization_id: str
    profile_id: str
    type_code: str
    kind: Kind
    number: str
    issue_date: str
    currency: str
    payable_amount: str
    supplier: Party
    customer: Party
    has_embedded_pdf: bool
    syntax: Literal["ubl"] = "ubl"

    def as_json(self) -> dict[str, Any]:
        """The facts as stored on the document row (JSON column), parties nested."""
        return {
            "syntax": self.syntax,
            "customization_id": self.customization_id,
            "profile_id": self.profile_id,
            "type_code": self.type_code,
            "kind": self.kind,
            "number": self.number,
            "issue_date": self.issue_date,
            "currency": self.currency,
            "payable_amount": self.payable_amount,
            "supplier": self.supplier.as_json(),
            "customer": self.customer.as_json(),
            "has_embedded_pdf": self.has_embedded_pdf,
        }


_NO_PARTY = Party(name="", vat="", company=None, endpoint=None)


def read_ubl(root: etree._Element) -> UblFacts:
    """Read the facts of a UBL document; raise `NotUbl` for any other root.

    `kind` is what the document declares (root element, then type code). Whether a negative
    invoice is booked as a credit note is a booking decision and is made elsewhere.
    """
    if root.tag not in (INVOICE, CREDIT_NOTE):
        raise NotUbl(str(root.tag))
    credit_root = root.tag == CREDIT_NOTE
    type_code = _text(root, "cbc:CreditNoteTypeCode" if credit_root else "cbc:InvoiceTypeCode")
    return UblFacts(
        customization_id=_text(root, "cbc:CustomizationID"),
        profile_id=_text(root, "cbc:ProfileID"),
        type_code=type_code,
        kind="credit-note" if credit_root or type_code in CREDIT_TYPE_CODES else "invoice",
        number=_text(root, "cbc:ID"),
        issue_date=_iso_date(_text(root, "cbc:IssueDate")),
        currency=_text(root, "cbc:DocumentCurrencyCode"),
        payable_amount=_text(root, "cac:LegalMonetaryTotal/cbc:PayableAmount"),
        supplier=_party(root.find("cac:AccountingSupplierParty/cac:Party", NS)),
        customer=_party(root.find("cac:AccountingCustomerParty/cac:Party", NS)),
        has_embedded_pdf=embedded_pdf(root) is not None,
    )


def embedded_pdf(root: etree._Element) -> tuple[str, bytes] | None:
    """The first attached PDF as (file name, bytes), or None.

    Only content that really is a PDF counts: many examples declare `application/pdf` around a
    placeholder string or an empty element. The file name is reduced to a plain base name.
    """
    for reference in root.iterfind("cac:AdditionalDocumentReference", NS):
        binary = reference.find("cac:Attachment/cbc:EmbeddedDocumentBinaryObject", NS)
        if binary is None or binary.get("mimeCode", "").strip().lower() != "application/pdf":
            continue
        content = _base64(binary.text or "")
        if content.startswith(b"%PDF-"):
            return _pdf_name(binary.get("filename", ""), _text(reference, "cbc:ID")), content
    return None


def _party(party: etree._Element | None) -> Party:
    if party is None:
        return _NO_PARTY
    return Party(
        name=_text(party, "cac:PartyName/cbc:Name")
        or _text(party, "cac:PartyLegalEntity/cbc:RegistrationName"),
        vat=_vat(party),
        company=_schemed(party.find("cac:PartyLegalEntity/cbc:CompanyID", NS)),
        endpoint=_schemed(party.find("cbc:EndpointID", NS)),
    )


def _vat(party: etree._Element) -> str:
    """The CompanyID of the VAT tax scheme; Swedish examples also list F-skatt under `TAX`."""
    for scheme in party.iterfind("cac:PartyTaxScheme", NS):
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
    return (element.findtext(path, namespaces=NS) or "").strip()


def _iso_date(text: str) -> str:
    """xs:date may carry a zone (`2018-04-09Z`); the fact is the calendar day."""
    try:
        return date.fromisoformat(text[:10]).isoformat()
    except ValueError:
        return text


def _base64(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except binascii.Error:
        return b""


def _pdf_name(filename: str, reference_id: str) -> str:
    base = re.split(r"[\\/]", filename.strip())[-1].strip(". ")
    name = _UNSAFE_NAME.sub("_", base or reference_id).strip("._") or "attachment"
    return name if name.lower().endswith(".pdf") else f"{name}.pdf"
