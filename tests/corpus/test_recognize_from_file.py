"""Recognition of a stored part read where it lies gives what the bytes in memory give.

The rules stage hands recognition the staged file, not its bytes: a PDF is opened from the
file, XML and CODA are read whole, anything else is judged from its first bytes. Every corpus
file must come out the same either way.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from corpus_dir import CORPUS

from gateway.mime import StoredPart
from gateway.rules.recognize import DossierFacts, Recognition, recognize
from gateway.store.blobs import Staged

DOSSIER = DossierFacts("BE0123456749", "", ("BE68539007547034",))
SKIP = {".csv", ".md", ".eml", ".xsd"}
FILES = sorted(
    p for p in CORPUS.rglob("*") if p.is_file() and p.suffix not in SKIP and "eml" not in p.parts
)


def _stored(path: Path) -> StoredPart:
    return StoredPart(path.name, "", Staged("0" * 64, path.stat().st_size, path))


def _same(found: Recognition) -> tuple[object, ...]:
    visual = (found.visual.filename, found.visual.data) if found.visual else None
    return (found.doc_type, found.reason, found.facts, visual, found.text)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_a_file_read_where_it_lies_is_recognised_as_its_bytes(path: Path) -> None:
    from_file = recognize(path.name, "", _stored(path), DOSSIER)
    assert _same(from_file) == _same(recognize(path.name, "", path.read_bytes(), DOSSIER))


class _NoWholeRead(StoredPart):
    def read(self) -> bytes:
        raise AssertionError("read whole")


def test_a_big_file_that_is_no_format_is_judged_from_its_first_bytes(tmp_path: Path) -> None:
    path = tmp_path / "scan.pdf"
    path.write_bytes(b"\x00GARBAGE" + os.urandom(2_000_000))
    part = _NoWholeRead(path.name, "application/pdf", Staged("0" * 64, 0, path))
    found = recognize(path.name, "application/pdf", part, DOSSIER)
    assert found.doc_type is None and found.reason.startswith("not-xml")
