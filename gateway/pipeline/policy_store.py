"""The office's rules in the database (`gateway rules add`), beside those of the config file.

Order is the policy's meaning, so it is explicit: dossier rules before gateway rules; at each
level the config file's rules first (in file order), then the database's by position. A rule
is named uniquely per level; adding it again under the same name updates it in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, cast

from sqlalchemy import ColumnElement, Table, bindparam, func, or_, select
from sqlalchemy.orm import Session

from gateway.rules.policy import Rule, make_rule
from gateway.store.models import Dossier
from gateway.store.models import Rule as RuleRow

# The table's columns, not the mapped class's: a statement of mapped attributes goes through
# the ORM's compilation and result handling, which cost more than the rows it reads.
_RULES = cast(Table, RuleRow.__table__)
_RULE_COLUMNS = select(
    _RULES.c.name, _RULES.c.match, _RULES.c.actions, _RULES.c.continue_matching
).order_by(_RULES.c.position, _RULES.c.id)
_GATEWAY_RULES = _RULE_COLUMNS.where(_RULES.c.dossier_id.is_(None))
_DOSSIER_RULES = _RULE_COLUMNS.where(_RULES.c.dossier_id == bindparam("dossier"))
# A dossier's policy is read for every batch: both levels in one statement.
_POLICY = _RULE_COLUMNS.add_columns(_RULES.c.dossier_id).where(
    or_(_RULES.c.dossier_id == bindparam("dossier"), _RULES.c.dossier_id.is_(None))
)


class RuleNotFound(LookupError):
    """No rule of that name at that level."""


def put_rule(session: Session, rule: Rule, position: int | None = None) -> RuleRow:
    dossier_id = _dossier_id(session, rule.dossier)
    row = _find(session, rule.name, dossier_id)
    if row is None:
        row = RuleRow(name=rule.name, dossier_id=dossier_id, position=_next(session, dossier_id))
        session.add(row)
    if position is not None:
        row.position = position
    row.match = dict(rule.match)
    row.actions = dict(rule.actions)
    row.continue_matching = rule.continue_
    session.flush()
    return row


def delete_rule(session: Session, name: str, dossier: str) -> None:
    row = _find(session, name, _dossier_id(session, dossier))
    if row is None:
        where = f"dossier {dossier}" if dossier else "gateway level"
        raise RuleNotFound(f"no rule {name!r} at {where}")
    session.delete(row)


class Level(Protocol):
    """A dossier as far as its rules go: a mapped `Dossier`, or a row the rules stage read."""

    @property
    def id(self) -> int: ...
    @property
    def slug(self) -> str: ...


def rules_for(session: Session, dossier: Level, configured: Sequence[Rule]) -> list[Rule]:
    """The ordered policy for one dossier's documents."""
    own = [r for r in configured if r.dossier == dossier.slug]
    shared = [r for r in configured if not r.dossier]
    rows = session.connection().execute(_POLICY, {"dossier": dossier.id}).all()
    stored_own = [_rule(r, dossier.slug) for r in rows if r.dossier_id is not None]
    stored_shared = [_rule(r, "") for r in rows if r.dossier_id is None]
    return [*own, *stored_own, *shared, *stored_shared]


def all_rules(session: Session, configured: Sequence[Rule]) -> list[Rule]:
    """Every rule, for listing: config and database, dossiers first, in evaluation order."""
    slugs = sorted({r.dossier for r in configured if r.dossier} | set(_stored_slugs(session)))
    ordered: list[Rule] = []
    for slug in slugs:
        dossier = session.scalars(select(Dossier).where(Dossier.slug == slug)).first()
        ordered += [r for r in configured if r.dossier == slug]
        ordered += _stored(session, dossier) if dossier else []
    return [*ordered, *[r for r in configured if not r.dossier], *_stored(session, None)]


def rule_view(rule: Rule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "dossier": rule.dossier,
        "source": rule.source,
        "match": dict(rule.match),
        "actions": dict(rule.actions),
        "continue": rule.continue_,
    }


def _stored(session: Session, dossier: Level | None) -> list[Rule]:
    connection = session.connection()
    if dossier is None:
        rows = connection.execute(_GATEWAY_RULES)
    else:
        rows = connection.execute(_DOSSIER_RULES, {"dossier": dossier.id})
    slug = dossier.slug if dossier else ""
    return [_rule(r, slug) for r in rows]


def _rule(row: Any, slug: str) -> Rule:
    """A stored rule from a row of `_RULE_COLUMNS`."""
    return make_rule(row.name, row.match, row.actions, row.continue_matching, slug, "database")


def _stored_slugs(session: Session) -> list[str]:
    joined = select(Dossier.slug).join(RuleRow, RuleRow.dossier_id == Dossier.id).distinct()
    return list(session.scalars(joined))


def _level(dossier_id: int | None) -> ColumnElement[bool]:
    return RuleRow.dossier_id.is_(None) if dossier_id is None else RuleRow.dossier_id == dossier_id


def _find(session: Session, name: str, dossier_id: int | None) -> RuleRow | None:
    found = select(RuleRow).where(RuleRow.name == name, _level(dossier_id))
    return session.scalars(found).first()


def _next(session: Session, dossier_id: int | None) -> int:
    highest = session.scalar(select(func.max(RuleRow.position)).where(_level(dossier_id)))
    return (highest or 0) + 10


def _dossier_id(session: Session, slug: str) -> int | None:
    if not slug:
        return None
    found = session.scalars(select(Dossier.id).where(Dossier.slug == slug)).first()
    if found is None:
        raise RuleNotFound(f"no dossier {slug!r}")
    return found
