"""Finding elements by local name, for formats that changed namespaces between versions.

CII (ZUGFeRD 1 vs D16B) and camt.053 (.001.02 to .001.13) keep their element names while the
namespace moves with every version; matching local names along a short path reads all of them
with one reader. Paths are steps split by `/`, each step `A|B` naming alternatives.
"""

from __future__ import annotations

from collections.abc import Iterator

from lxml import etree


def local_name(element: etree._Element) -> str:
    tag = element.tag
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def namespace(element: etree._Element) -> str:
    tag = element.tag
    return tag[1:].partition("}")[0] if isinstance(tag, str) and tag.startswith("{") else ""


def find_all(element: etree._Element, path: str) -> Iterator[etree._Element]:
    found = [element]
    for step in path.split("/"):
        names = set(step.split("|"))
        found = [child for parent in found for child in parent if local_name(child) in names]
    return iter(found)


def find(element: etree._Element, path: str) -> etree._Element | None:
    return next(find_all(element, path), None)


def text(element: etree._Element | None, path: str) -> str:
    found = find(element, path) if element is not None else None
    return (found.text or "").strip() if found is not None else ""
