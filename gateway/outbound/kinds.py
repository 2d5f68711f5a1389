"""The integration kinds: their options (checked like the config) and their adapters."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    filename_template: str = _template()


@dataclass(frozen=True)
class SftpOptions:
    host: str
    username: str
    host_key: str
    port: int = field(
        default=22, metadata={"check": lambda v: 0 < v < 65536, "expected": "a port number"}
    )
    password_file: Path | None = None
    key_file: Path | None = None
    upload_path: str = _upload_path()
    filename_template: str = _template()
    connect_timeout: float = 15.0


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


Options = DirectoryOptions | SftpOptions | TrytonOptions
OPTIONS: dict[str, type[Options]] = {
    "directory": DirectoryOptions,
    "sftp": SftpOptions,
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
    if isinstance(parsed, TrytonOptions):
        mapping = parse_mapping(options.get("mapping", {}), source, f"{prefix}mapping.")
        parsed = dataclasses.replace(parsed, mapping=mapping)
    return parsed


def _check_sftp(opts: SftpOptions, source: str, prefix: str) -> None:
    from gateway.outbound.sftp import host_key_problem

    if opts.password_file is None and opts.key_file is None:
        raise ConfigError(source, f"{prefix}key_file", "set key_file or password_file")
    problem = host_key_problem(opts.host_key)
    if problem:
        raise ConfigError(source, f"{prefix}host_key", problem)


def make_adapter(kind: str, name: str, options: dict[str, Any]) -> Adapter:
    opts = parse_options(kind, options, f"integration {name!r}", "")
    if isinstance(opts, TrytonOptions):
        from gateway.outbound.tryton import TrytonAdapter

        return TrytonAdapter(name, opts)
    if isinstance(opts, DirectoryOptions):
        from gateway.outbound.directory import DirectoryAdapter

        return DirectoryAdapter(opts)
    from gateway.outbound.sftp import SftpAdapter

    return SftpAdapter(name, opts)
