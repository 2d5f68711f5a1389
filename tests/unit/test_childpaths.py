"""ChildPaths finds what XPath finds for the same child paths, every match in document order."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from gateway.rules.childpaths import ChildPaths
from gateway.rules.ubl import NS

DATA = Path(__file__).resolve().parents[1] / "data"
PATHS = [
    "cbc:ID",
    "cac:A/cbc:B",
    "cac:A/cac:C/cbc:B",
    "cac:A",
    "plain/cbc:B",
]
DOC = b"""<r xmlns:cac="%(cac)s" xmlns:cbc="%(cbc)s">
  <!-- a comment --><?pi here?>
  <cac:A><cbc:B>1</cbc:B><cac:C><cbc:B>deep</cbc:B></cac:C><cbc:B>2</cbc:B></cac:A>
  <cbc:ID> first </cbc:ID>
  <cac:A><cbc:X/><cbc:B>3</cbc:B></cac:A>
  <cbc:ID>second</cbc:ID>
  <plain><cbc:B>4</cbc:B></plain>
  <cac:B><cbc:B>not under A</cbc:B></cac:B>
</r>""" % {b"cac": NS["cac"].encode(), b"cbc": NS["cbc"].encode()}


@pytest.mark.parametrize("path", PATHS)
def test_finds_what_xpath_finds(path: str) -> None:
    root = etree.fromstring(DOC)
    found = ChildPaths(PATHS, NS).read(root)
    assert found.all(path) == etree.XPath(path, namespaces=NS)(root)


def test_first_and_text() -> None:
    found = ChildPaths(PATHS, NS).read(etree.fromstring(DOC))
    assert found.text("cbc:ID") == "first"
    assert found.text("cac:A/cbc:B") == "1"
    assert found.first("cac:A/cac:C/cbc:B") is not None
    empty = ChildPaths(["cbc:Missing"], NS).read(etree.fromstring(DOC))
    assert empty.first("cbc:Missing") is None
    assert empty.text("cbc:Missing") == ""


def test_a_real_invoice_reads_like_xpath() -> None:
    root = etree.fromstring((DATA / "purchase-invoice-demo.xml").read_bytes())
    paths = ["cbc:ID", "cac:AccountingSupplierParty/cac:Party/cac:PartyName/cbc:Name"]
    found = ChildPaths(paths, NS).read(root)
    for path in paths:
        assert found.all(path) == etree.XPath(path, namespaces=NS)(root)
