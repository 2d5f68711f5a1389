"""`gateway integration`: the accounting packages documents go to, and a real connection test."""

from __future__ import annotations

import argparse
import asyncio
import tomllib
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway import config, office
from gateway.commands.common import (
    EX_REFUSED,
    Refused,
    checked_store,
    emit,
    json_flag,
    load_settings,
    with_session,
)
from gateway.store.models import Delivery, DeliveryState, Integration, utcnow


def register(sub: Any) -> None:
    group = sub.add_parser("integration", help="integrations").add_subparsers(required=True)
    add = group.add_parser("add", help="create or update an integration")
    add.add_argument("name")
    add.add_argument("--kind", required=True, help="directory, sftp or tryton")
    add.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="kind option (repeat)"
    )
    add.set_defaults(func=cmd_integration_add)
    lst = group.add_parser("list", help="list integrations with their last test and queue")
    json_flag(lst)
    lst.set_defaults(func=cmd_integration_list)
    test = group.add_parser("test", help="check an integration's connection for real")
    test.add_argument("name")
    json_flag(test)
    test.set_defaults(func=cmd_integration_test)


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise Refused(f"--option {text!r}: expected KEY=VALUE")
    try:
        return key, tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value


def cmd_integration_add(args: argparse.Namespace) -> int:
    options = dict(_parse_option(o) for o in args.option)
    entry = config.IntegrationEntry(args.name, args.kind, options)

    def work(session: Session) -> int:
        row = office.put_integration(session, entry, "command line")
        print(f"integration {row.name} saved (id {row.id})")
        return 0

    return with_session(args, work)


def cmd_integration_list(args: argparse.Namespace) -> int:
    def work(session: Session) -> int:
        rows = session.scalars(select(Integration).order_by(Integration.name))
        views = (office.integration_view(r) | _integration_state(session, r) for r in rows)
        emit(views, args.json, _integration_line)
        return 0

    return with_session(args, work)


def _integration_state(session: Session, row: Integration) -> dict[str, Any]:
    """The last connection test and how many deliveries wait or failed, per integration."""
    counts = session.execute(
        select(Delivery.state, func.count())
        .where(Delivery.integration_id == row.id)
        .group_by(Delivery.state)
    ).all()
    return {
        "last_test": {
            "at": row.last_test_at.isoformat() if row.last_test_at else None,
            "ok": row.last_test_ok,
            "report": row.last_test_report,
        },
        "deliveries": {state.value: n for state, n in counts},
    }


def cmd_integration_test(args: argparse.Namespace) -> int:
    from gateway.outbound import probe

    store = checked_store(load_settings(args))
    with store.session() as session:
        row = session.scalars(select(Integration).where(Integration.name == args.name)).first()
        if row is None:
            raise Refused(f"no integration named {args.name!r} (see `gateway integration list`)")
        kind, options = row.kind, dict(row.options)
        broken = _last_broken(session, row)
    if broken:
        print(broken)
    steps = asyncio.run(probe.run(kind, args.name, options))
    failed = [s for s in steps if not s.ok]
    with store.session.begin() as session:
        row = session.scalars(select(Integration).where(Integration.name == args.name)).one()
        row.last_test_at = utcnow()
        row.last_test_ok = not failed
        row.last_test_report = (
            f"{failed[0].name}: {failed[0].detail}" if failed else f"{len(steps)} steps ok"
        )
    rows = [{"step": s.name, "ok": s.ok, "detail": s.detail} for s in steps]
    emit(rows, args.json, _step_line)
    return EX_REFUSED if failed else 0


BROKEN_CODES = ("login-refused", "integration-broken", "auth-failed")


def _last_broken(session: Session, row: Integration) -> str:
    """Say so when the integration's latest delivery found it broken (a refused login)."""
    last = session.scalars(
        select(Delivery)
        .where(Delivery.integration_id == row.id, Delivery.state != DeliveryState.QUEUED)
        .order_by(Delivery.updated_at.desc())
        .limit(1)
    ).first()
    if last is None or last.last_error_code not in BROKEN_CODES:
        return ""
    since = f"{last.updated_at:%Y-%m-%d %H:%M:%S}Z"
    return f"integration {row.name}: broken since {since}: {last.last_error_text}"


def _integration_line(i: dict[str, Any]) -> str:
    test = i.get("last_test") or {}
    if test.get("at") is None:
        tested = "never tested"
    else:
        verdict = "ok" if test["ok"] else f"FAILED ({test['report']})"
        tested = f"tested {test['at'][:19].replace('T', ' ')}Z {verdict}"
    queue_counts = " ".join(f"{k}={v}" for k, v in sorted(i.get("deliveries", {}).items()))
    return f"{i['name']:<20} {i['kind']:<10} {tested}  {queue_counts}".rstrip()


def _step_line(r: dict[str, Any]) -> str:
    return f"{'ok' if r['ok'] else 'FAILED':<7} {r['step']:<11} {r['detail']}"
