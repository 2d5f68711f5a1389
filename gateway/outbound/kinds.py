"""The integration kinds: their options (checked like the config) and their adapters."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.booking.mapping import Mapping, parse_mapping
from gateway.config import ConfigError, read_table
from gateway.outbound.base import Adapter
from gateway.outbound.naming import (
    DEFAULT_TEMPLATE,
    DEFAULT_UPLOAD_PATH,
    check_template,
    check_upload_path,
)


def _template() -> Any:
    return field(
        default=DEFAULT_TEMPLATE,
        metadata={"check": lambda v: check_template(v) is None, "expected": "a name template"},
    )


# Like Postfix's per-destination concurrency, only lower (its default is 20): an office's
# package server is small, and four in flight already keep one SFTP or HTTP server busy.
DEFAULT_CONCURRENCY = 4


def _concurrency() -> Any:
    return field(
        default=DEFAULT_CONCURRENCY,
        metadata={"check": lambda v: 0 < v <= 64, "expected": "a number from 1 to 64"},
    )


def _subpath() -> Any:
    return field(
        default="",
        metadata={
            "check": lambda v: check_upload_path(v) is None,
            "expected": "a relative path without '..'",
        },
    )


def _upload_path() -> Any:
    return field(
        default=DEFAULT_UPLOAD_PATH,
        metadata={
            "check": lambda v: check_upload_path(v) is None,
            "expected": "a relative path without '..'",
        },
    )


@dataclass(frozen=True)
class DirectoryOptions:
    path: Path
    upload_path: str = _upload_path()
    purchase_subpath: str = _subpath()
    sales_subpath: str = _subpath()
    bank_subpath: str = _subpath()
    other_subpath: str = _subpath()
    filename_template: str = _template()
    concurrency: int = _concurrency()


@dataclass(frozen=True)
class SftpOptions:
    host: str
    username: str
    host_key: str
    port: int = field(
        default=22, metadata={"check": lambda v: 0 < v < 65536, "expected": "a port number"}
    )
    password_file: Path | None = None
    password_credential: str | None = None
    key_file: Path | None = None
    upload_path: str = _upload_path()
    # Per type, below upload_path: e.g. purchase_subpath = "Purchase" → Invoice_import/Purchase/.
    purchase_subpath: str = _subpath()
    sales_subpath: str = _subpath()
    bank_subpath: str = _subpath()
    other_subpath: str = _subpath()
    filename_template: str = _template()
    connect_timeout: float = 15.0
    # Seconds one upload (check, write, rename) may take before the server counts as stalled.
    timeout: float = 600.0
    # Deliveries at once from one gateway process, each on its own pooled connection.
    concurrency: int = _concurrency()


TLS_MODES = ("starttls", "tls", "none")


@dataclass(frozen=True)
class MailboxOptions:
    host: str
    from_address: str
    port: int = field(
        default=587, metadata={"check": lambda v: 0 < v < 65536, "expected": "a port number"}
    )
    tls: str = field(
        default="starttls",
        metadata={"check": lambda v: v in TLS_MODES, "expected": "starttls, tls or none"},
    )
    username: str = ""
    password_file: Path | None = None
    password_credential: str | None = None
    # Destination per document type; `to` catches the types without one of their own.
    to: str = ""
    to_purchase: str = ""
    to_sales: str = ""
    to_bank: str = ""
    to_other: str = ""
    subject: str = "[type] [number] [original]"
    # Also attach the PDF embedded in a UBL document, for packages that file the PDF.
    attach_pdf: bool = False
    # RFC 5321 allows a relay 10 minutes to answer the final dot; less manufactures duplicates.
    timeout: float = 600.0
    concurrency: int = _concurrency()


@dataclass(frozen=True)
class HttpOptions:
    url: str = field(
        metadata={
            "check": lambda v: v.startswith(("https://", "http://")),
            "expected": "an http:// or https:// URL",
        }
    )
    # The HMAC-SHA256 signing key; required, from a file or a systemd credential.
    secret_file: Path | None = None
    secret_credential: str | None = None
    # An optional bearer token for the Authorization header.
    token_file: Path | None = None
    token_credential: str | None = None
    timeout: float = 60.0
    concurrency: int = _concurrency()


@dataclass(frozen=True)
class TrytonOptions:
    """Tryton's JSON-RPC; `mapping` is its own table, checked by `parse_mapping`."""

    url: str = field(
        metadata={
            "check": lambda v: v.startswith(("http://", "https://")),
            "expected": "an http:// or https:// URL",
        }
    )
    database: str
    username: str
    password_file: Path
    timeout: float = field(
        default=60.0, metadata={"check": lambda v: v > 0, "expected": "seconds > 0"}
    )
    mapping: Mapping = field(default_factory=Mapping)


Options = DirectoryOptions | SftpOptions | MailboxOptions | HttpOptions | TrytonOptions
OPTIONS: dict[str, type[Options]] = {
    "directory": DirectoryOptions,
    "sftp": SftpOptions,
    "mailbox": MailboxOptions,
    "http": HttpOptions,
    "tryton": TrytonOptions,
}


def parse_options(kind: str, options: dict[str, Any], source: str, prefix: str) -> Options:
    """Typed options for `kind`; errors name `source` and the key under `prefix`."""
    if kind not in OPTIONS:
        known = ", ".join(sorted(OPTIONS))
        raise ConfigError(source, f"{prefix}kind", f"unknown kind {kind!r} (known: {known})")
    scalars = {k: v for k, v in options.items() if not (kind == "tryton" and k == "mapping")}
    parsed = read_table(OPTIONS[kind], scalars, source, prefix)
    if isinstance(parsed, SftpOptions):
        _check_sftp(parsed, source, prefix)
    if isinstance(parsed, MailboxOptions):
        _check_mailbox(parsed, source, prefix)
    if isinstance(parsed, HttpOptions):
        _check_http(parsed, source, prefix)
    if isinstance(parsed, TrytonOptions):
        mapping = parse_mapping(options.get("mapping", {}), source, f"{prefix}mapping.")
        parsed = dataclasses.replace(parsed, mapping=mapping)
    return parsed


def _check_http(opts: HttpOptions, source: str, prefix: str) -> None:
    if opts.secret_file is None and opts.secret_credential is None:
        raise ConfigError(
            source, f"{prefix}secret_file", "set secret_file or secret_credential (HMAC key)"
        )
    if opts.url.startswith("http://") and not _is_loopback(urlsplit(opts.url).hostname or ""):
        raise ConfigError(
            source, f"{prefix}url", "plain http:// only to this machine; use https://"
        )


def _check_mailbox(opts: MailboxOptions, source: str, prefix: str) -> None:
    from gateway.outbound.mailaddress import address_template_problem
    from gateway.outbound.naming import unknown_placeholder

    for key in ("from_address", "to", "to_purchase", "to_sales", "to_bank", "to_other"):
        value = getattr(opts, key)
        problem = value and address_template_problem(value)
        if problem:
            raise ConfigError(source, f"{prefix}{key}", problem)
    unknown = unknown_placeholder(opts.subject)
    if unknown:
        raise ConfigError(source, f"{prefix}subject", f"unknown placeholder [{unknown}]")
    if opts.tls == "none" and opts.username:
        raise ConfigError(
            source, f"{prefix}tls", "tls = none with a username would send the password in clear"
        )


def _check_sftp(opts: SftpOptions, source: str, prefix: str) -> None:
    from gateway.outbound.sftp import host_key_problem

    if opts.password_file is None and opts.key_file is None and opts.password_credential is None:
        raise ConfigError(
            source, f"{prefix}key_file", "set key_file, password_file or password_credential"
        )
    problem = host_key_problem(opts.host_key)
    if problem:
        raise ConfigError(source, f"{prefix}host_key", problem)


def concurrency(options: dict[str, Any]) -> int:
    """How many deliveries one process runs at once for an integration with `options`."""
    value = options.get("concurrency", DEFAULT_CONCURRENCY)
    return value if isinstance(value, int) and value > 0 else DEFAULT_CONCURRENCY


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_adapter(kind: str, name: str, options: dict[str, Any]) -> Adapter:
    opts = parse_options(kind, options, f"integration {name!r}", "")
    if isinstance(opts, TrytonOptions):
        from gateway.outbound.tryton.adapter import TrytonAdapter

        return TrytonAdapter(name, opts)
    if isinstance(opts, DirectoryOptions):
        from gateway.outbound.directory import DirectoryAdapter

        return DirectoryAdapter(opts)
    if isinstance(opts, MailboxOptions):
        from gateway.outbound.mailbox import MailboxAdapter

        return MailboxAdapter(name, opts)
    if isinstance(opts, HttpOptions):
        from gateway.outbound.api import HttpAdapter

        return HttpAdapter(name, opts)
    from gateway.outbound.sftp import SftpAdapter

    return SftpAdapter(name, opts)
