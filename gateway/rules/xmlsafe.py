"""Parsing XML that strangers sent us.

Attachments are hostile until proven otherwise: entities are never expanded, no DTD is loaded,
nothing is fetched, and any document that declares a DOCTYPE is refused outright, because no
e-invoice, statement or message we accept needs one and every entity attack starts with one.
"""

from __future__ import annotations

import codecs
import re
import threading

from lxml import etree

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_XML_SPACE = b" \t\r\n"
_LEADING_MARKUP = re.compile(rb"[ \t\r\n]*<")
_DOCTYPE_IN_PROLOG = re.compile(
    rb"(?:\xef\xbb\xbf)?(?:[ \t\r\n]|<\?.*?\?>|<!--.*?-->)*+<!DOCTYPE", re.DOTALL
)
_POSITION_SUFFIX = re.compile(r",\s*line \d+, column \d+\s*$")
_PER_THREAD = threading.local()


class NotXml(ValueError):
    """The bytes are not a document we are willing to read as XML.

    `reason` is a stable kebab-case code for machines (`not-xml`, `xml-broken`,
    `xml-doctype-forbidden`); `detail` is for the person reading the Inbox.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def looks_like_xml(data: bytes) -> bool:
    """Sniff content, not names: senders call PDFs `.xml` and XML `.txt`."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            head = data[len(bom) : len(bom) + 512].decode(codec, errors="ignore")
            return head.lstrip(_XML_SPACE.decode()).startswith("<")
    return _LEADING_MARKUP.match(data) is not None


def parse_xml(data: bytes) -> etree._Element:
    """Parse `data` or raise `NotXml`; the caller never sees lxml's own exceptions.

    A DOCTYPE is looked for twice: in the raw prolog, so libxml2 never even reads the entity
    declarations of an ASCII-compatible document, and in the parsed tree, which also covers
    UTF-16 input.
    """
    if not looks_like_xml(data):
        raise NotXml("not-xml", "content does not start with '<'")
    data = _without_leading_space(data)
    if _DOCTYPE_IN_PROLOG.match(data):
        raise _doctype_refused()
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise NotXml("xml-broken", _describe(exc)) from exc
    if _declares_dtd(root.getroottree().docinfo):
        raise _doctype_refused()
    return root


def _without_leading_space(data: bytes) -> bytes:
    """Generated files often start with a blank line, which makes an XML declaration illegal."""
    if data.startswith(codecs.BOM_UTF8):
        return codecs.BOM_UTF8 + data[len(codecs.BOM_UTF8) :].lstrip(_XML_SPACE)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data
    return data.lstrip(_XML_SPACE)


def _parser() -> etree.XMLParser:
    """This thread's parser: parsing runs in worker threads and a parser must not be shared
    between them, while making one per document cost a tenth of parsing a small invoice."""
    parser: etree.XMLParser | None = getattr(_PER_THREAD, "parser", None)
    if parser is None:
        parser = _PER_THREAD.parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=False,
        )
    return parser


def _declares_dtd(docinfo: etree.DocInfo) -> bool:
    """libxml2 records every DOCTYPE, even `<!DOCTYPE a>`, as an internal subset node."""
    return docinfo.internalDTD is not None or docinfo.externalDTD is not None


def _doctype_refused() -> NotXml:
    return NotXml("xml-doctype-forbidden", "documents with a DOCTYPE declaration are refused")


def _describe(exc: etree.XMLSyntaxError) -> str:
    line, column = exc.position
    message = _POSITION_SUFFIX.sub("", " ".join(str(exc.msg).split()))
    return f"line {line}, column {column}: {message}"
