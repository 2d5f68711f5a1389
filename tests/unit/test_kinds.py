"""Integration options are checked like the config: errors name the key and what is wrong."""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, DeliverySettings
from gateway.outbound.api import _retry_after, signature
from gateway.outbound.base import Outgoing, PermanentError
from gateway.outbound.kinds import MailboxOptions, SftpOptions, concurrency, parse_options
from gateway.outbound.mailaddress import destination
from gateway.outbound.naming import target_folder
from gateway.outbound.secrets import read_secret

MAILBOX = {"host": "smtp.example.net", "from_address": "gw@office.example"}


def _error(kind: str, options: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_options(kind, options, "gw.toml", "integrations[0].")
    return caught.value


def test_http_needs_a_signing_secret() -> None:
    error = _error("http", {"url": "https://api.example.net/import"})
    assert error.key == "integrations[0].secret_file"


@pytest.mark.parametrize("url", ["http://api.example.net/x", "http://127.evil.example/x"])
def test_plain_http_is_refused_except_to_this_machine(url: str) -> None:
    error = _error("http", {"url": url, "secret_credential": "k"})
    assert error.key == "integrations[0].url"
    assert "https://" in error.problem
    parse_options("http", {"url": "http://127.0.0.1:8080/x", "secret_credential": "k"}, "", "")


def test_mailbox_refuses_a_password_in_clear_and_unknown_placeholders() -> None:
    error = _error("mailbox", {**MAILBOX, "tls": "none", "username": "u", "password_file": "p"})
    assert error.key == "integrations[0].tls"
    error = _error("mailbox", {**MAILBOX, "to": "in.[client]@books.example"})
    assert error.key == "integrations[0].to"
    assert "[client]" in error.problem
    error = _error("mailbox", {**MAILBOX, "to_sales": "not an address"})
    assert error.key == "integrations[0].to_sales"


def test_concurrency_is_checked_and_defaults_to_four() -> None:
    error = _error("directory", {"path": "x", "concurrency": 0})
    assert error.key == "integrations[0].concurrency"
    assert concurrency({}) == 4
    assert concurrency({"concurrency": 5}) == 5


def _item(**kw: Any) -> Outgoing:
    base: dict[str, Any] = {
        "delivery_id": 1,
        "attempt_id": "a",
        "document_id": 1,
        "dossier": "acme",
        "accounting_file_id": "",
        "doc_type": "sales_invoice",
        "filename": "i.xml",
        "media_type": "application/xml",
        "data": b"x",
        "sha256": "0" * 64,
    }
    return Outgoing(**(base | kw))


def test_address_templates_are_filled_and_an_empty_value_fails_clearly() -> None:
    options = MailboxOptions(**MAILBOX, to="[vat].[accounting_file_id]@books.example")
    item = _item(vat="BE0123456749", accounting_file_id="f42")
    assert destination(options, item) == "BE0123456749.f42@books.example"
    with pytest.raises(PermanentError, match=r"needs \[accounting_file_id\], dossier acme"):
        destination(options, _item(vat="BE0123456749"))


def test_dossier_overrides_win_over_the_integration() -> None:
    options = MailboxOptions(**MAILBOX, to_sales="sales@books.example")
    item = _item(overrides={"to_sales": "acme-sales@books.example"})
    assert destination(options, item) == "acme-sales@books.example"


def test_secrets_come_from_the_systemd_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "smtp").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_secret(None, "smtp", "password") == "s3cret"
    with pytest.raises(PermanentError) as caught:
        read_secret(None, "missing", "password")
    assert "s3cret" not in str(caught.value)
    with pytest.raises(PermanentError, match="not a name"):
        read_secret(None, "../etc/passwd", "password")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(PermanentError, match=r"\$CREDENTIALS_DIRECTORY is not set"):
        read_secret(None, "smtp", "password")


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert _retry_after("120") == 120.0
    in_a_minute = _retry_after(formatdate(time.time() + 60, usegmt=True))
    assert in_a_minute is not None and 55 <= in_a_minute <= 61
    assert _retry_after("soon") is None
    assert _retry_after("") is None


def test_signature_covers_timestamp_and_body() -> None:
    one = signature("k", 1700000000, b"body")
    assert one.startswith("t=1700000000,v1=")
    assert one != signature("k", 1700000001, b"body")
    assert one != signature("k", 1700000000, b"bodY")
    assert one != signature("other", 1700000000, b"body")


def test_lifetime_defaults_to_three_days() -> None:
    assert DeliverySettings().lifetime == 3 * 86400


def test_target_folder_joins_the_type_sub_path_and_never_leaves_the_drop() -> None:
    options = SftpOptions(host="h", username="u", host_key="k", purchase_subpath="Purchase")
    assert target_folder(options, _item(doc_type="purchase_invoice")) == "Invoice_import/Purchase"
    assert target_folder(options, _item(doc_type="sales_invoice")) == "Invoice_import"
    hostile = _item(doc_type="purchase_invoice", overrides={"purchase_subpath": "../../etc"})
    with pytest.raises(PermanentError, match=re.escape("purchase_subpath '../../etc'")):
        target_folder(options, hostile)
    error = _error("directory", {"path": "x", "sales_subpath": "/abs"})
    assert error.key == "integrations[0].sales_subpath"
