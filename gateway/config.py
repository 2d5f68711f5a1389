"""One TOML file into typed settings.

Every table is a dataclass; `read_table` fills it and refuses unknown keys and wrong types
with a `ConfigError` that names the file, the dotted key and what was expected, because an
operator fixing a config at 3 a.m. needs exactly those three things.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gateway.rules.policy import Rule, RuleError, make_rule

EX_CONFIG = 78

T = TypeVar("T")


class ConfigError(Exception):
    """A setting that cannot be used; `str()` is the message for the operator."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem


def _check(test: Callable[[Any], bool], expected: str) -> dict[str, Any]:
    return {"check": test, "expected": expected}


def _port() -> dict[str, Any]:
    return _check(lambda v: 0 <= v <= 65535, "a port number from 0 to 65535")


def _positive() -> dict[str, Any]:
    return _check(lambda v: v > 0, "a number greater than 0")


LOG_LEVELS = frozenset({"debug", "info", "warning", "error"})


@dataclass(frozen=True)
class GatewaySettings:
    state_dir: Path = Path("var")
    log_level: str = field(
        default="info",
        metadata=_check(lambda v: v in LOG_LEVELS, "one of " + ", ".join(sorted(LOG_LEVELS))),
    )
    log_format: str = field(
        default="auto",
        metadata=_check(lambda v: v in ("auto", "json", "console"), "auto, json or console"),
    )


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite:///var/gateway.db"
    busy_timeout: float = field(default=5.0, metadata=_positive())


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = field(default=2525, metadata=_port())
    hostname: str = "gateway.localhost"
    max_message_size: int = field(default=25 * 1024 * 1024, metadata=_positive())
    timeout: float = field(default=300.0, metadata=_positive())
    max_recipients: int = field(default=100, metadata=_positive())
    # Unknown recipients one session may try before it is closed (address harvesting).
    max_unknown_recipients: int = field(default=20, metadata=_positive())
    max_sessions: int = field(default=100, metadata=_positive())
    max_line_length: int = field(default=1000, metadata=_check(lambda v: v >= 100, ">= 100"))
    tls_cert: str = ""
    tls_key: str = ""
    require_tls: bool = False
    # Users for SMTP AUTH (PLAIN/LOGIN, only after STARTTLS); empty: no AUTH offered.
    auth_file: str = ""
    # Processes answering SMTP. Above 1, the daemon binds the port and that many listener
    # processes run only the SMTP door (one Python process uses one core at most).
    processes: int = field(default=1, metadata=_check(lambda v: 1 <= v <= 64, "1 to 64"))


SENDER_POLICIES = ("off", "header", "aligned")


@dataclass(frozen=True)
class IntakeSettings:
    """What every door shares: how senders are authenticated against the allowed lists."""

    sender_policy: str = field(
        default="header",
        metadata=_check(lambda v: v in SENDER_POLICIES, "off, header or aligned"),
    )
    # The authserv-id whose Authentication-Results header is trusted on IMAP intake (the
    # mailbox provider's); any other such header is ignored. Empty: none is trusted.
    trusted_authserv_id: str = ""
    # "host" or "host:port" of the DNS resolver for SPF and DKIM; empty: the system's.
    dns_resolver: str = field(
        default="",
        metadata=_check(
            lambda v: v == "" or bool(re.fullmatch(r"[^:\s]+(:\d{1,5})?", v)), "host or host:port"
        ),
    )


@dataclass(frozen=True)
class ImapAccountSettings:
    """One mailbox the IMAP door polls; it feeds `dossier`, or routes by Delivered-To /
    X-Original-To when the operator declares it a `catch_all`."""

    name: str
    host: str
    user: str
    password_file: str
    port: int = field(default=993, metadata=_port())
    tls: str = field(default="ssl", metadata=_check(lambda v: v in ("ssl", "none"), "ssl or none"))
    ca_file: str = ""
    folder: str = "INBOX"
    dossier: str = ""
    catch_all: bool = False
    post_action: str = field(
        default="move", metadata=_check(lambda v: v in ("move", "flag"), "move or flag")
    )
    processed_folder: str = "Processed"
    flag: str = "$GatewayTaken"
    idle: bool = True
    poll_interval: float = field(default=60.0, metadata=_positive())
    timeout: float = field(default=60.0, metadata=_positive())
    reconnect_max: float = field(default=300.0, metadata=_positive())
    max_messages_per_run: int = field(default=100, metadata=_positive())
    max_bytes_per_run: int = field(default=200 * 1024 * 1024, metadata=_positive())
    max_message_size: int = field(default=50 * 1024 * 1024, metadata=_positive())


@dataclass(frozen=True)
class FolderSettings:
    """The drop folder: `root/<dossier-slug>/<file>`; empty root: no folder door."""

    root: str = ""
    # A file is taken once its size and mtime have not changed for this many seconds.
    stable_seconds: float = field(default=2.0, metadata=_check(lambda v: v >= 0, ">= 0"))
    # Poll instead of inotify (network shares: SMB/NFS send no events).
    force_polling: bool = False
    # Seconds between full rescans, whatever the watcher reports.
    rescan_interval: float = field(default=30.0, metadata=_positive())
    max_file_size: int = field(default=50 * 1024 * 1024, metadata=_positive())


@dataclass(frozen=True)
class MimeSettings:
    """How far a message is taken apart; past a limit the message goes to quarantine."""

    max_parts: int = field(default=500, metadata=_positive())
    max_depth: int = field(default=20, metadata=_positive())
    max_header_bytes: int = field(default=102400, metadata=_positive())
    small_image_bytes: int = field(default=20 * 1024, metadata=_check(lambda v: v >= 0, ">= 0"))
    zip_max_entries: int = field(default=500, metadata=_positive())
    zip_max_total: int = field(default=100 * 1024 * 1024, metadata=_positive())
    zip_max_ratio: int = field(default=100, metadata=_positive())
    zip_max_depth: int = field(default=2, metadata=_check(lambda v: v >= 0, ">= 0"))


@dataclass(frozen=True)
class DeliverySettings:
    # Deliveries at once from this process, over all integrations (each within its own
    # `concurrency`).
    workers: int = field(default=8, metadata=_positive())
    poll_interval: float = field(default=1.0, metadata=_positive())
    lease: float = field(default=300.0, metadata=_positive())
    retry_initial: float = field(default=60.0, metadata=_positive())
    retry_max: float = field(default=3600.0, metadata=_positive())
    lifetime: float = field(default=3 * 86400.0, metadata=_positive())


@dataclass(frozen=True)
class MetricsSettings:
    # Off unless asked for: the endpoint is unauthenticated, and a fixed port would collide
    # between instances on one host.
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = field(default=9125, metadata=_port())


@dataclass(frozen=True)
class DaemonSettings:
    # Seconds SMTP sessions and deliveries get to finish after SIGTERM.
    drain_timeout: float = field(default=30.0, metadata=_positive())
    # Seconds between STATUS= updates to systemd.
    status_interval: float = field(default=10.0, metadata=_positive())
    # The rules stage in a process of its own (a core for recognition beside the doors and
    # the workers); false: in the daemon's process, which takes the least memory.
    rules_process: bool = False


@dataclass(frozen=True)
class RecognitionSettings:
    """How far recognition goes: PDF text proposals and the optional UBL schema check."""

    pdf_min_confidence: float = field(
        default=0.85, metadata=_check(lambda v: 0 <= v <= 1, "a number from 0 to 1")
    )
    # Folder holding maindoc/UBL-Invoice-2.1.xsd, maindoc/UBL-CreditNote-2.1.xsd and common/.
    ubl_xsd_dir: Path | None = None


@dataclass(frozen=True)
class DossierSettings:
    """A dossier the config provisions into the database at start-up."""

    slug: str
    integration: str
    name: str = ""
    vat: str = ""
    company_number: str = ""
    accounting_file_id: str = ""
    addresses: list[str] = field(default_factory=list)
    auto_send: bool = False
    ibans: list[str] = field(default_factory=list)
    # None leaves the list to the CLI; a list (even empty) is applied exactly at every start.
    allowed_senders: list[str] | None = None


@dataclass(frozen=True)
class IntegrationEntry:
    """An integration the config provisions; `options` are checked by its kind."""

    name: str
    kind: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Settings:
    source: str
    gateway: GatewaySettings
    database: DatabaseSettings
    smtp: SmtpSettings
    delivery: DeliverySettings
    metrics: MetricsSettings
    daemon: DaemonSettings
    integrations: list[IntegrationEntry]
    dossiers: list[DossierSettings]
    recognition: RecognitionSettings = field(default_factory=RecognitionSettings)
    rules: list[Rule] = field(default_factory=list)
    mime: MimeSettings = MimeSettings()
    intake: IntakeSettings = IntakeSettings()
    imap: list[ImapAccountSettings] = field(default_factory=list)
    folder: FolderSettings = FolderSettings()

    @property
    def blob_dir(self) -> Path:
        return self.gateway.state_dir / "blobs"


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
