"""Local-name paths find what walking the children by local name finds, in document order."""

from __future__ import annotations

import pytest
from lxml import etree

from gateway.rules.xmlpath import find, find_all, local_name, text

DOC = b"""<r xmlns="urn:one" xmlns:b="urn:two">
  <!-- a comment --><?pi here?>
  <A><C>1</C><b:C>2</b:C></A>
  <b:B><C>3</C><D><C>deep</C></D></b:B>
  <A><X/><C xmlns="">4</C></A>
  <C>top</C>
</r>"""


def walked(element: etree._Element, path: str) -> list[etree._Element]:
    found = [element]
    for step in path.split("/"):
        names = set(step.split("|"))
        found = [child for parent in found for child in parent if local_name(child) in names]
    return found


@pytest.mark.parametrize("path", ["A/C", "A|B/C", "B|A/C", "C", "B/D/C", "A/Z", "Z|C"])
def test_paths_find_what_a_walk_by_local_name_finds(path: str) -> None:
    root = etree.fromstring(DOC)
    expected = walked(root, path)
    assert list(find_all(root, path)) == expected
    assert find(root, path) is (expected[0] if expected else None)


def test_text_of_the_first_match() -> None:
    root = etree.fromstring(DOC)
    assert text(root, "A|B/C") == "1"
    assert text(root, "Z") == ""
    assert text(None, "A") == ""
