"""Hostile file names never choose where a document lands."""

from __future__ import annotations

import pytest

from gateway.filenames import MAX_BYTES, safe_filename
from gateway.outbound.base import Outgoing
from gateway.outbound.naming import check_template, check_upload_path, render


@pytest.mark.parametrize(
    ("hostile", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\x.dll", "x.dll"),
        ("/abs/path/inv.xml", "inv.xml"),
        (".hidden", "hidden"),
        ("..", "document"),
        ("", "document"),
        ("in\x00vo\r\nice.pdf", "in_vo ice.pdf"),
        ("a:b*c?.pdf", "a_b_c_.pdf"),
        ("factuur  mei\t2026.pdf", "factuur mei 2026.pdf"),
    ],
)
def test_safe_filename(hostile: str, safe: str) -> None:
    assert safe_filename(hostile) == safe


def test_long_names_keep_their_extension_and_byte_limit() -> None:
    name = safe_filename("é" * 300 + ".pdf")
    assert name.endswith(".pdf")
    assert len(name.encode()) <= MAX_BYTES


def _item(**kw: object) -> Outgoing:
    base: dict[str, object] = {
        "delivery_id": 1,
        "attempt_id": "a",
        "document_id": 42,
        "dossier": "acme",
        "accounting_file_id": "F-7",
        "doc_type": "purchase_invoice",
        "filename": "inv.xml",
        "media_type": "application/xml",
        "data": b"x",
        "sha256": "0" * 64,
        "facts": {"number": "INV/1", "issue_date": "2026-11-02"},
    }
    base.update(kw)
    return Outgoing(**base)  # type: ignore[arg-type]


def test_render_template_fields_and_sanitises_the_result() -> None:
    item = _item()
    assert render("[id]-[original]", item) == "42-inv.xml"
    assert render("[accounting_file_id]_[type]_[number]_[date].xml", item) == (
        "F-7_purchase_invoice_INV_1_2026-11-02.xml"
    )
    assert render("[id]-[original]", _item(filename="../../x.xml")) == "42-.._.._x.xml"


def test_template_and_upload_path_checks() -> None:
    assert check_template("[id]-[original]") is None
    assert "unknown placeholder [nme]" in (check_template("[id][nme]") or "")
    assert "[id] or [number]" in (check_template("[original]") or "")
    assert check_upload_path("Invoice_import/") is None
    assert check_upload_path("a/b") is None
    assert check_upload_path("/etc") is not None
    assert check_upload_path("a/../../b") is not None
