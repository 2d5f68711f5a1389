"""The office's setup in the database: integrations, dossiers and their intake addresses.

Both the CLI and the config file's `[[integrations]]`/`[[dossiers]]` go through these
functions, so a dossier is checked the same way however it was made. What the config
declares is applied at every start (the config wins for what it names); everything else is
managed with the CLI.
"""

from __future__ import annotations

import re
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.config import DossierSettings, IntegrationEntry, Settings
from gateway.intake.senders import allowlist
from gateway.outbound.kinds import parse_options
from gateway.rules.statement import is_valid_iban, normalize_account
from gateway.store.models import Address, AllowedSender, Dossier, Integration

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
HOSTNAME = re.compile(
    r"(?i)(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
)
SECRET_KEYS = re.compile(r"password|secret|token|passphrase", re.IGNORECASE)


class SetupError(Exception):
    """A dossier or integration that cannot be saved; the message names what is wrong."""


def put_integration(session: Session, entry: IntegrationEntry, source: str) -> Integration:
    """Create or update the integration `entry.name` after checking its options."""
    parse_options(entry.kind, entry.options, source, "")
    row = session.scalars(select(Integration).where(Integration.name == entry.name)).first()
    if row is None:
        row = Integration(name=entry.name)
        session.add(row)
    row.kind = entry.kind
    row.options = dict(entry.options)
    session.flush()
    return row


def put_dossier(session: Session, spec: DossierSettings) -> Dossier:
    """Create or update dossier `spec.slug`; its addresses become exactly `spec.addresses`."""
    if not SLUG.match(spec.slug):
        raise SetupError(f"dossier slug {spec.slug!r}: use a-z, 0-9, '-' or '_' (max 100)")
    integration_id = _integration_id(session, spec.integration)
    row = session.scalars(select(Dossier).where(Dossier.slug == spec.slug)).first()
    if row is None:
        row = Dossier(slug=spec.slug)
        session.add(row)
    row.name = spec.name or row.name or spec.slug
    row.vat_number = spec.vat
    row.company_number = spec.company_number
    row.accounting_file_id = spec.accounting_file_id
    row.auto_send = spec.auto_send
    row.ibans = [_iban(value) for value in spec.ibans]
    row.integration_id = integration_id
    session.flush()
    _set_addresses(session, row, spec.addresses)
    if spec.allowed_senders is not None:
        set_allowed_senders(session, row, spec.allowed_senders)
    return row


def _iban(value: str) -> str:
    """Stored compact and upper case; a typo is caught by the check digits, not at 3 a.m."""
    iban = normalize_account(value)
    if not is_valid_iban(iban):
        raise SetupError(f"IBAN {value!r}: not a valid IBAN (country, check digits, account)")
    return iban


def find_dossier(session: Session, slug: str) -> Dossier:
    row = session.scalars(select(Dossier).where(Dossier.slug == slug)).first()
    if row is None:
        raise SetupError(f"no dossier {slug!r} (see `gateway dossier list`)")
    return row


def _patterns(entries: list[str]) -> set[str]:
    try:
        return {allowlist.normalize_pattern(e) for e in entries}
    except allowlist.BadPattern as exc:
        raise SetupError(str(exc)) from None


def set_allowed_senders(session: Session, dossier: Dossier, entries: list[str]) -> None:
    """The dossier's list becomes exactly `entries` (addresses or `@domain`)."""
    wanted = _patterns(entries)
    dossier.allowed_senders = [s for s in dossier.allowed_senders if s.pattern in wanted]
    have = {s.pattern for s in dossier.allowed_senders}
    dossier.allowed_senders.extend(AllowedSender(pattern=p) for p in sorted(wanted - have))
    session.flush()


def allow_senders(session: Session, slug: str, entries: list[str]) -> list[str]:
    """Add entries to the dossier's list; returns the whole list."""
    dossier = find_dossier(session, slug)
    current = [s.pattern for s in dossier.allowed_senders]
    set_allowed_senders(session, dossier, current + sorted(_patterns(entries)))
    return sorted(s.pattern for s in dossier.allowed_senders)


def disallow_senders(session: Session, slug: str, entries: list[str]) -> list[str]:
    """Remove entries from the dossier's list; an entry not on it is an error."""
    dossier = find_dossier(session, slug)
    gone = _patterns(entries)
    current = {s.pattern for s in dossier.allowed_senders}
    missing = sorted(gone - current)
    if missing:
        raise SetupError(f"dossier {slug}: not on the allowed senders: {', '.join(missing)}")
    set_allowed_senders(session, dossier, sorted(current - gone))
    return sorted(s.pattern for s in dossier.allowed_senders)


def allowed_patterns(session: Session, slug: str) -> list[str]:
    """The allowed-sender patterns of dossier `slug` (empty: anyone), for the doors."""
    return list(
        session.scalars(
            select(AllowedSender.pattern).join(Dossier).where(Dossier.slug == slug)
        ).all()
    )


def allowed_senders(session: Session, slug: str) -> list[str]:
    return sorted(s.pattern for s in find_dossier(session, slug).allowed_senders)


def _integration_id(session: Session, name: str) -> int | None:
    if name == "none":
        return None
    found = session.scalars(select(Integration.id).where(Integration.name == name)).first()
    if found is None:
        raise SetupError(f"no integration named {name!r} (see `gateway integration list`)")
    return found


def normalize_address(address: str) -> str:
    """An intake address, lower-cased. The domain is ours to receive on, so internal names
    (`gateway.localhost`, `docs.office.internal`) are fine where email-validator would refuse
    special-use domains; only the local part goes through its syntax check."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local:
        raise SetupError(f"address {address!r}: expected local-part@domain")
    try:
        validate_email(f"{local}@example.com", check_deliverability=False)
    except EmailNotValidError as exc:
        raise SetupError(f"address {address!r}: {exc}") from None
    if not HOSTNAME.fullmatch(domain):
        raise SetupError(f"address {address!r}: {domain!r} is not a host name")
    return f"{local}@{domain}".lower()


def _set_addresses(session: Session, dossier: Dossier, addresses: list[str]) -> None:
    wanted = {normalize_address(a) for a in addresses}
    for address in wanted:
        owner = session.scalars(select(Address).where(Address.address == address)).first()
        if owner is not None and owner.dossier_id != dossier.id:
            other = session.get_one(Dossier, owner.dossier_id)
            raise SetupError(f"address {address} already belongs to dossier {other.slug}")
    dossier.addresses = [a for a in dossier.addresses if a.address in wanted]
    have = {a.address for a in dossier.addresses}
    dossier.addresses.extend(Address(address=a) for a in sorted(wanted - have))
    session.flush()


def provision(session: Session, settings: Settings) -> None:
    """Apply the config file's integrations and dossiers to the database."""
    for entry in settings.integrations:
        put_integration(session, entry, settings.source)
    for spec in settings.dossiers:
        put_dossier(session, spec)


def integration_view(row: Integration) -> dict[str, Any]:
    """What may be shown of an integration: secrets are never printed, only their presence."""
    options = {
        k: ("***" if SECRET_KEYS.search(k) and not k.endswith("_file") else v)
        for k, v in row.options.items()
    }
    return {"id": row.id, "name": row.name, "kind": row.kind, "options": options}


def dossier_view(row: Dossier) -> dict[str, Any]:
    return {
        "id": row.id,
        "slug": row.slug,
        "name": row.name,
        "vat": row.vat_number,
        "company_number": row.company_number,
        "accounting_file_id": row.accounting_file_id,
        "auto_send": row.auto_send,
        "integration": row.integration.name if row.integration else "none",
        "addresses": [a.address for a in row.addresses],
        "ibans": list(row.ibans),
        "allowed_senders": sorted(s.pattern for s in row.allowed_senders),
    }
