"""The office's own rules, applied after recognition: declarative, ordered, and explained.

A rule names what it looks at (`match`, every key must match) and what it does (`actions`).
Dossier rules come before gateway rules, each level in its order; the first matching rule
wins unless it says `continue`. Every matching rule is recorded on the document with the
values that made it match, so "why did this get that type" always has an answer (Mailman's
rules that record why they fired).

Match keys take shell-style globs, case-insensitive: `sender`, `recipient`, `subaddress`
(the `+detail` of the recipient's local part), `subject`, `filename`, `media_type`, `syntax`,
`type` (the recognised type, or `unrecognised`), `reason` (the reason text), and the fact
columns of expected.csv (`supplier_vat`, `customer_vat`, `invoice_number`, `currency`, ...).
A VAT column without glob characters is compared as a VAT number (`BE 0123.456.749` matches
`BE0123456749`). Actions: `set_type` (a document type), `quarantine`, `drop`, `auto_send =
false`. Pure: the rules and the document's facts in, the outcome out.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.rules.columns import COLUMNS, expected_columns
from gateway.rules.vat import same_party
from gateway.store.models import DocType

MATCH_KEYS = frozenset(
    {"sender", "recipient", "subaddress", "subject", "filename", "media_type", "type", "reason"}
    | set(COLUMNS)
)
ACTION_KEYS = frozenset({"set_type", "quarantine", "drop", "auto_send"})
_VAT_KEYS = frozenset({"supplier_vat", "customer_vat"})
_GLOB = frozenset("*?[")


class RuleError(ValueError):
    """A rule that cannot be used; `key` names the offending key for the config error."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Rule:
    name: str
    match: Mapping[str, str]
    actions: Mapping[str, Any]
    continue_: bool = False
    dossier: str = ""  # slug; empty for a gateway rule
    source: str = "config"  # or "database"


@dataclass(frozen=True)
class Subject:
    """What the rules look at: the message around the document and the document itself."""

    sender: str
    recipients: tuple[str, ...]
    subject: str
    filename: str
    media_type: str
    doc_type: DocType | None
    reason: str
    facts: Mapping[str, Any]


@dataclass(frozen=True)
class Outcome:
    doc_type: DocType | None
    reason: str
    auto_send: bool = True
    quarantined: str = ""
    dropped: str = ""
    matched: list[dict[str, Any]] = field(default_factory=list)


def make_rule(
    name: str,
    match: Mapping[str, Any],
    actions: Mapping[str, Any],
    continue_: bool = False,
    dossier: str = "",
    source: str = "config",
) -> Rule:
    """A checked rule; `RuleError` names the key that is wrong."""
    if not name.strip():
        raise RuleError("name", "missing; expected a non-empty string")
    if not match:
        raise RuleError("match", "empty; a rule must match on something")
    for key, value in match.items():
        if key not in MATCH_KEYS:
            raise RuleError(f"match.{key}", f"unknown (known: {', '.join(sorted(MATCH_KEYS))})")
        if not isinstance(value, str):
            raise RuleError(f"match.{key}", f"expected a string (glob), got {value!r}")
    for key, value in actions.items():
        if key not in ACTION_KEYS:
            raise RuleError(f"actions.{key}", f"unknown (known: {', '.join(sorted(ACTION_KEYS))})")
        if key == "set_type" and value not in {t.value for t in DocType}:
            known = ", ".join(t.value for t in DocType)
            raise RuleError("actions.set_type", f"expected one of {known}, got {value!r}")
        if key != "set_type" and not isinstance(value, bool):
            raise RuleError(f"actions.{key}", f"expected true or false, got {value!r}")
    if not actions:
        raise RuleError("actions", "empty; a rule must do something")
    return Rule(name, dict(match), dict(actions), continue_, dossier, source)


def evaluate(rules: Sequence[Rule], subject: Subject) -> Outcome:
    """Apply `rules` in order (the caller puts dossier rules before gateway rules)."""
    outcome = Outcome(subject.doc_type, subject.reason)
    if not rules:  # most dossiers have none: no values to work out
        return outcome
    values = _values(subject)
    for rule in rules:
        why = _why(rule, values)
        if why is None:
            continue
        outcome = _apply(rule, why, outcome)
        if not rule.continue_:
            break
    return outcome


def _apply(rule: Rule, why: str, outcome: Outcome) -> Outcome:
    actions = rule.actions
    doc_type, reason = outcome.doc_type, outcome.reason
    if "set_type" in actions:
        doc_type = DocType(actions["set_type"])
        reason = f"rule {rule.name}: type {doc_type.value} ({why})"
    entry = {
        "rule": rule.name,
        "level": f"dossier {rule.dossier}" if rule.dossier else "gateway",
        "source": rule.source,
        "why": why,
        "actions": dict(actions),
    }
    return Outcome(
        doc_type=doc_type,
        reason=reason,
        auto_send=outcome.auto_send and actions.get("auto_send", True) and not _held(actions),
        quarantined=outcome.quarantined or (rule.name if actions.get("quarantine") else ""),
        dropped=outcome.dropped or (rule.name if actions.get("drop") else ""),
        matched=[*outcome.matched, entry],
    )


def _held(actions: Mapping[str, Any]) -> bool:
    return bool(actions.get("quarantine") or actions.get("drop"))


def _why(rule: Rule, values: Mapping[str, tuple[str, ...]]) -> str | None:
    """`key=value` for every match key, or None as soon as one does not match."""
    reasons = []
    for key, pattern in rule.match.items():
        hit = next((v for v in values.get(key, ("",)) if _matches(key, pattern, v)), None)
        if hit is None:
            return None
        reasons.append(f"{key}={hit!r}")
    return ", ".join(reasons)


def _matches(key: str, pattern: str, value: str) -> bool:
    if key in _VAT_KEYS and not _GLOB & set(pattern):
        return same_party(pattern, value)
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def _values(subject: Subject) -> dict[str, tuple[str, ...]]:
    recipients = tuple(r.lower() for r in subject.recipients)
    columns = expected_columns(dict(subject.facts))
    return {
        "sender": (subject.sender.lower(),),
        "recipient": recipients,
        "subaddress": tuple(_subaddress(r) for r in recipients),
        "subject": (subject.subject,),
        "filename": (subject.filename,),
        "media_type": (subject.media_type,),
        "type": (subject.doc_type.value if subject.doc_type else "unrecognised",),
        "reason": (subject.reason,),
        **{key: (value,) for key, value in columns.items()},
    }


def _subaddress(address: str) -> str:
    local = address.rpartition("@")[0]
    return local.partition("+")[2]
