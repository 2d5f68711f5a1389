"""The sender check for doors that cannot refuse (IMAP, folder): instead of a 550, the message
is stored in quarantine with the same reason the SMTP door would have given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway import mime
from gateway.config import IntakeSettings
from gateway.intake.accept import Route
from gateway.intake.senders import allowlist, authentication
from gateway.office import allowed_patterns
from gateway.store.db import Store


@dataclass(frozen=True)
class Screening:
    quarantine: str
    auth: dict[str, Any]


def screen(store: Store, raw: bytes, routes: list[Route], intake: IntakeSettings) -> Screening:
    """Blocking (database): call from a thread."""
    with store.session() as session:
        guarded = [(r, allowed_patterns(session, r.dossier)) for r in routes]
    guarded = [(r, p) for r, p in guarded if p]
    if not guarded:
        return Screening("", {})
    policy = allowlist.SenderPolicy(intake.sender_policy)
    evidence = authentication.Evidence()
    if policy is allowlist.SenderPolicy.ALIGNED:
        results = mime.header_values(raw, "Authentication-Results")
        evidence = authentication.trusted_results(results, intake.trusted_authserv_id)
    mail_from = return_path(raw)
    from_values = mime.header_values(raw, "From")
    for route, patterns in guarded:
        verdict = allowlist.check_message(
            route.dossier,
            patterns,
            mail_from,
            from_values,
            policy,
            evidence.passed,
            evidence.temporary,
        )
        if not verdict.allowed:
            return Screening(verdict.reason, evidence.results)
    return Screening("", evidence.results)


def return_path(raw: bytes) -> str:
    """The envelope sender as the final delivery recorded it (the topmost Return-Path)."""
    values = mime.header_values(raw, "Return-Path")
    if not values:
        return ""
    return values[0].strip().removeprefix("<").removesuffix(">").strip()
