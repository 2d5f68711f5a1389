"""Factur-X, ZUGFeRD and XRechnung hybrids: the invoice XML a PDF carries as an embedded file.

The XML decides, the PDF is its visual. When a PDF embeds several XMLs (a ZUGFeRD 1 and a
Factur-X copy of the same invoice, say), the standards' own names are preferred in the order
below; any other XML is still looked at, so an Order-X or a custom name is reported for what it
is rather than silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFERRED = ("factur-x.xml", "zugferd-invoice.xml", "xrechnung.xml", "ZUGFeRD-invoice.xml")


@dataclass(frozen=True)
class EmbeddedXml:
    name: str
    data: bytes


def choose_xml(files: dict[str, bytes]) -> EmbeddedXml | None:
    """The embedded XML that speaks for the PDF, or None when it embeds none."""
    for name in PREFERRED:
        if name in files:
            return EmbeddedXml(name, files[name])
    others = [name for name in files if name.lower().endswith(".xml")]
    return EmbeddedXml(others[0], files[others[0]]) if others else None
