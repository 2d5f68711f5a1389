"""What the config file may say: one frozen dataclass per TOML table, with defaults and limits.

Each field's metadata carries its check and the words that describe a good value, so the reader
(`gateway.config`) can refuse a bad one with a message that names the key and what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.rules.policy import Rule


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
    # The SMTP door in a listener process even with `smtp.processes = 1` (above 1 it always
    # is); false: the daemon answers SMTP itself then.
    smtp_process: bool = False


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
