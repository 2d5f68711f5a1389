"""Several child paths of one element, read in a single pass over the elements they go through.

A document format is read as a dozen short paths from the same element (`cbc:ID`,
`cac:LegalMonetaryTotal/cbc:PayableAmount`, ...). Evaluated one by one, as XPath or `find`
does, each path costs a context and a scan of the children of its own: three quarters of the
time of reading a small UBL invoice, more than parsing it. Here the paths are merged into a
tree of tags once, and one walk visits each child once, following only the branches some path
goes down. What each path finds is what XPath finds: every match, in document order.
Only child steps are supported, which is all a format reader needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lxml import etree


@dataclass
class _Step:
    """One tag in the merged tree: the paths that end here, and the steps that go on."""

    ends: list[str] = field(default_factory=list)
    below: dict[str, _Step] = field(default_factory=dict)


class Found:
    """What each path of one read found."""

    def __init__(self, found: dict[str, list[etree._Element]]) -> None:
        self._found = found

    def all(self, path: str) -> list[etree._Element]:
        return self._found[path]

    def first(self, path: str) -> etree._Element | None:
        found = self._found[path]
        return found[0] if found else None

    def text(self, path: str) -> str:
        """The first match's text, stripped; "" when there is none."""
        found = self._found[path]
        return (found[0].text or "").strip() if found else ""


class ChildPaths:
    """Paths like `cac:A/cbc:B` (prefixes from `namespaces`), compiled once, read together."""

    def __init__(self, paths: Iterable[str], namespaces: Mapping[str, str]) -> None:
        self.paths = tuple(paths)
        self._tree = _Step()
        for path in self.paths:
            step = self._tree
            for name in path.split("/"):
                step = step.below.setdefault(_clark(name, namespaces), _Step())
            step.ends.append(path)

    def read(self, element: etree._Element) -> Found:
        found: dict[str, list[etree._Element]] = {path: [] for path in self.paths}
        _walk(element, self._tree.below, found)
        return Found(found)


def _walk(
    element: etree._Element, steps: dict[str, _Step], found: dict[str, list[etree._Element]]
) -> None:
    """Comments and processing instructions have no string tag, so they match no step."""
    for child in element:
        step = steps.get(child.tag)
        if step is None:
            continue
        for path in step.ends:
            found[path].append(child)
        if step.below:
            _walk(child, step.below, found)


def _clark(name: str, namespaces: Mapping[str, str]) -> str:
    prefix, colon, local = name.rpartition(":")
    return f"{{{namespaces[prefix]}}}{local}" if colon else local
