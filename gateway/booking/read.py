"""Which reader a document needs, chosen by its root element."""

from __future__ import annotations

from lxml import etree

from gateway.booking.cii_invoice import CII_ROOT, invoice_from_cii
from gateway.booking.invoice import InvoiceInput, UnreadableInvoice
from gateway.booking.ubl_invoice import ubl_invoice
from gateway.rules.ubl import CREDIT_NOTE, INVOICE


def read_invoice(root: etree._Element) -> InvoiceInput:
    if root.tag in (INVOICE, CREDIT_NOTE):
        return ubl_invoice(root)
    if root.tag == CII_ROOT:
        return invoice_from_cii(root)
    raise UnreadableInvoice(f"root {root.tag} is neither UBL nor CII; it cannot be booked")
