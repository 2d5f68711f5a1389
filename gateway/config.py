"""One TOML file into typed settings.

Every table is a dataclass of `gateway.settings`; `read_table` fills it and refuses unknown
keys and wrong types with a `ConfigError` that names the file, the dotted key and what was
expected, because an operator fixing a config at 3 a.m. needs exactly those three things.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from gateway.rules.policy import Rule, RuleError, make_rule
from gateway.settings import (
    DaemonSettings,
    DatabaseSettings,
    DeliverySettings,
    DossierSettings,
    FolderSettings,
    GatewaySettings,
    ImapAccountSettings,
    IntakeSettings,
    IntegrationEntry,
    MetricsSettings,
    MimeSettings,
    RecognitionSettings,
    Settings,
    SmtpSettings,
)

# The settings classes are part of this module's face: callers name them `config.X`.
__all__ = [
    "EX_CONFIG",
    "ConfigError",
    "DaemonSettings",
    "DatabaseSettings",
    "DeliverySettings",
    "DossierSettings",
    "FolderSettings",
    "GatewaySettings",
    "ImapAccountSettings",
    "IntakeSettings",
    "IntegrationEntry",
    "MetricsSettings",
    "MimeSettings",
    "RecognitionSettings",
    "Settings",
    "SmtpSettings",
    "load",
    "parse",
    "read_table",
]

EX_CONFIG = 78

T = TypeVar("T")


class ConfigError(Exception):
    """A setting that cannot be used; `str()` is the message for the operator."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem


def _expected_for(tp: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    if tp in names:
        return names[tp]
    if tp is Path:
        return "a path (string)"
    if typing.get_origin(tp) is list:
        return "a list of strings"
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _expected_for(inner[0]) + " (optional)"
    return str(tp)


def _coerce(tp: Any, value: Any) -> Any:
    """Return `value` as `tp`, or raise TypeError; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(inner[0], value)
    if origin is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise TypeError
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is Path and isinstance(value, str):
        return Path(value)
    if tp is str and isinstance(value, str):
        return value
    raise TypeError


def read_table(cls: type[T], table: Mapping[str, Any], source: str, prefix: str) -> T:
    """Build dataclass `cls` from `table`; unknown keys, wrong types and bad values are errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    for key in table:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(source, f"{prefix}{key}", f"unknown key (known keys: {known})")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if name not in table:
            no_default = f.default is dataclasses.MISSING
            if no_default and f.default_factory is dataclasses.MISSING:
                raise ConfigError(source, key, f"missing; expected {_expected_for(hints[name])}")
            continue
        try:
            value = _coerce(hints[name], table[name])
        except TypeError:
            got = f"{table[name]!r}"
            raise ConfigError(
                source, key, f"expected {_expected_for(hints[name])}, got {got}"
            ) from None
        check = f.metadata.get("check")
        if check is not None and value is not None and not check(value):
            raise ConfigError(source, key, f"expected {f.metadata['expected']}, got {value!r}")
        values[name] = value
    return cls(**values)


def _integration_entries(raw: Any, source: str) -> list[IntegrationEntry]:
    if not isinstance(raw, list):
        raise ConfigError(source, "integrations", "expected an array of tables [[integrations]]")
    entries = []
    for i, table in enumerate(raw):
        prefix = f"integrations[{i}]."
        for key in ("name", "kind"):
            if not isinstance(table.get(key), str) or not table[key]:
                raise ConfigError(source, prefix + key, "missing; expected a non-empty string")
        options = {k: v for k, v in table.items() if k not in ("name", "kind")}
        entries.append(IntegrationEntry(table["name"], table["kind"], options))
    return entries


def _dossiers(raw: Any, source: str) -> list[DossierSettings]:
    if not isinstance(raw, list):
        raise ConfigError(source, "dossiers", "expected an array of tables [[dossiers]]")
    return [read_table(DossierSettings, t, source, f"dossiers[{i}].") for i, t in enumerate(raw)]


TOP_LEVEL = {
    "gateway",
    "database",
    "smtp",
    "delivery",
    "metrics",
    "daemon",
    "integrations",
    "dossiers",
    "recognition",
    "rules",
    "mime",
    "intake",
    "imap",
    "folder",
}
TABLES = (
    "gateway",
    "database",
    "smtp",
    "delivery",
    "metrics",
    "daemon",
    "mime",
    "intake",
    "folder",
)


def parse(data: Mapping[str, Any], source: str) -> Settings:
    """Typed settings from already-parsed TOML; integration options are checked later by kind."""
    for key in data:
        if key not in TOP_LEVEL:
            known = ", ".join(sorted(TOP_LEVEL))
            raise ConfigError(source, key, f"unknown table (known: {known})")
    tables = {k: data.get(k, {}) for k in TABLES}
    for key, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(source, key, f"expected a table [{key}]")
    settings = Settings(
        source=source,
        gateway=read_table(GatewaySettings, tables["gateway"], source, "gateway."),
        database=read_table(DatabaseSettings, tables["database"], source, "database."),
        smtp=read_table(SmtpSettings, tables["smtp"], source, "smtp."),
        delivery=read_table(DeliverySettings, tables["delivery"], source, "delivery."),
        metrics=read_table(MetricsSettings, tables["metrics"], source, "metrics."),
        daemon=read_table(DaemonSettings, tables["daemon"], source, "daemon."),
        integrations=_integration_entries(data.get("integrations", []), source),
        dossiers=_dossiers(data.get("dossiers", []), source),
        recognition=_recognition(data.get("recognition", {}), source),
        rules=_rules(data.get("rules", []), source),
        mime=read_table(MimeSettings, tables["mime"], source, "mime."),
        intake=read_table(IntakeSettings, tables["intake"], source, "intake."),
        imap=_imap_accounts(data.get("imap", []), source),
        folder=read_table(FolderSettings, tables["folder"], source, "folder."),
    )
    _check_references(settings)
    return settings


def _recognition(raw: Any, source: str) -> RecognitionSettings:
    if not isinstance(raw, dict):
        raise ConfigError(source, "recognition", "expected a table [recognition]")
    return read_table(RecognitionSettings, raw, source, "recognition.")


def _rules(raw: Any, source: str) -> list[Rule]:
    """`[[rules]]`: name, optional dossier (slug), continue, and the [rules.match] and
    [rules.actions] tables; checked by the policy module, reported with the rule's index."""
    if not isinstance(raw, list):
        raise ConfigError(source, "rules", "expected an array of tables [[rules]]")
    rules = []
    for i, table in enumerate(raw):
        prefix = f"rules[{i}]."
        unknown = set(table) - {"name", "dossier", "continue", "match", "actions"}
        if unknown:
            known = "actions, continue, dossier, match, name"
            raise ConfigError(source, prefix + sorted(unknown)[0], f"unknown key (known: {known})")
        for key, kind, default, expected in (
            ("name", str, "", "a string"),
            ("dossier", str, "", "a dossier slug"),
            ("continue", bool, False, "true or false"),
            ("match", dict, {}, "a table [rules.match]"),
            ("actions", dict, {}, "a table [rules.actions]"),
        ):
            if not isinstance(table.get(key, default), kind):
                raise ConfigError(source, prefix + key, f"expected {expected}")
        try:
            rules.append(
                make_rule(
                    table.get("name", ""),
                    table.get("match", {}),
                    table.get("actions", {}),
                    table.get("continue", False),
                    table.get("dossier", ""),
                )
            )
        except RuleError as exc:
            raise ConfigError(source, prefix + exc.key, exc.problem) from None
        if any((r.name, r.dossier) == (rules[-1].name, rules[-1].dossier) for r in rules[:-1]):
            raise ConfigError(source, prefix + "name", f"{rules[-1].name!r} is used twice")
    return rules


def _imap_accounts(raw: Any, source: str) -> list[ImapAccountSettings]:
    if not isinstance(raw, list):
        raise ConfigError(source, "imap", "expected an array of tables [[imap]]")
    accounts = []
    for i, table in enumerate(raw):
        prefix = f"imap[{i}]."
        account = read_table(ImapAccountSettings, table, source, prefix)
        if bool(account.dossier) == account.catch_all:
            raise ConfigError(source, prefix + "dossier", "set either dossier or catch_all = true")
        if not Path(account.password_file).is_file():
            raise ConfigError(source, prefix + "password_file", "no such file")
        for key in ("folder", "processed_folder"):
            name = getattr(account, key)
            if not name or not name.isascii() or not name.isprintable():
                raise ConfigError(source, prefix + key, "expected a printable ASCII folder name")
        if account.post_action == "move" and account.processed_folder == account.folder:
            raise ConfigError(source, prefix + "processed_folder", "must differ from folder")
        accounts.append(account)
    names = [a.name for a in accounts]
    if len(set(names)) != len(names):
        raise ConfigError(source, "imap", "account names must be unique")
    return accounts


def _check_smtp(settings: Settings) -> None:
    smtp = settings.smtp
    if smtp.require_tls and not smtp.tls_cert:
        raise ConfigError(settings.source, "smtp.require_tls", "needs smtp.tls_cert (and tls_key)")
    if smtp.auth_file and not smtp.tls_cert:
        raise ConfigError(settings.source, "smtp.auth_file", "AUTH needs smtp.tls_cert (TLS)")
    for key in ("tls_cert", "tls_key", "auth_file"):
        path = getattr(smtp, key)
        if path and not Path(path).is_file():
            raise ConfigError(settings.source, f"smtp.{key}", f"no such file: {path}")


def _check_references(settings: Settings) -> None:
    from gateway.outbound.kinds import parse_options

    _check_smtp(settings)

    names = set()
    for i, entry in enumerate(settings.integrations):
        parse_options(entry.kind, entry.options, settings.source, f"integrations[{i}].")
        names.add(entry.name)
    for i, dossier in enumerate(settings.dossiers):
        if dossier.integration != "none" and dossier.integration not in names:
            raise ConfigError(
                settings.source,
                f"dossiers[{i}].integration",
                f'no integration named {dossier.integration!r} in this file (or use "none")',
            )


def load(path: str | Path) -> Settings:
    """Read and check the config file at `path`."""
    source = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(source, "(file)", "no such file") from None
    except PermissionError:
        raise ConfigError(source, "(file)", "permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "(syntax)", str(exc)) from None
    return parse(data, source)
