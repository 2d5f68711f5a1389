"""Finding elements by local name, for formats that changed namespaces between versions.

CII (ZUGFeRD 1 vs D16B) and camt.053 (.001.02 to .001.13) keep their element names while the
namespace moves with every version; matching local names along a short path reads all of them
with one reader. Paths are steps split by `/`, each step `A|B` naming alternatives.
Each path is compiled once to an XPath that tests local names, so the children of a step
(an invoice's many lines among them) are filtered by libxml2 rather than one by one here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import cast

from lxml import etree


def local_name(element: etree._Element) -> str:
    tag = element.tag
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def namespace(element: etree._Element) -> str:
    tag = element.tag
    return tag[1:].partition("}")[0] if isinstance(tag, str) and tag.startswith("{") else ""


def find_all(element: etree._Element, path: str) -> Iterator[etree._Element]:
    """Every element at the end of `path`, in document order."""
    return iter(_matches(element, path))


def find(element: etree._Element, path: str) -> etree._Element | None:
    found = _matches(element, path)
    return found[0] if found else None


def _matches(element: etree._Element, path: str) -> list[etree._Element]:
    return cast(list[etree._Element], _compiled(path)(element))


@functools.cache
def _compiled(path: str) -> etree.XPath:
    """`A|B/C` as `*[local-name()='A' or local-name()='B']/*[local-name()='C']`; names are
    this module's callers' constants. lxml's XPath objects may be shared between threads."""
    steps = (
        "*[" + " or ".join(f"local-name()='{name}'" for name in step.split("|")) + "]"
        for step in path.split("/")
    )
    return etree.XPath("/".join(steps))


def text(element: etree._Element | None, path: str) -> str:
    found = find(element, path) if element is not None else None
    return (found.text or "").strip() if found is not None else ""
