"""`gateway mapping show|set|check` and `gateway integration test`.

The mapping lives in the integration's options (`mapping` table) and, per dossier, in the
dossier's overrides; `set` writes either after checking the result like the config would.
`check` and `test` talk to the package: each makes exactly one login attempt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import office
from gateway.booking.mapping import merged, parse_mapping
from gateway.commands.common import Refused, json_flag, with_session
from gateway.config import IntegrationEntry
from gateway.outbound.base import DeliveryError
from gateway.outbound.kinds import TrytonOptions, parse_options
from gateway.store.models import Dossier, Integration


def register(sub: Any) -> None:
    group = sub.add_parser("mapping", help="invoice-to-entry mapping").add_subparsers(required=True)
    show = group.add_parser("show", help="the mapping in force (with a dossier's override)")
    show.add_argument("integration")
    show.add_argument("--dossier", help="merge this dossier's override")
    json_flag(show)
    show.set_defaults(func=lambda a: with_session(a, lambda s: _show(s, a)))
    put = group.add_parser("set", help="set mapping keys (KEY=VALUE, tables as TABLE.KEY=VALUE)")
    put.add_argument("integration")
    put.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
    put.add_argument("--dossier", help="set the dossier's override instead")
    put.add_argument("--unset", action="append", default=[], metavar="KEY", help="remove a key")
    put.set_defaults(func=lambda a: with_session(a, lambda s: _set(s, a)))
    check = group.add_parser("check", help="list mapped codes the package lacks")
    check.add_argument("integration")
    check.add_argument("--dossier", help="check with this dossier's override")
    check.set_defaults(func=lambda a: with_session(a, lambda s: _check(s, a)))


def _integration(session: Session, name: str) -> Integration:
    row = session.scalars(select(Integration).where(Integration.name == name)).first()
    if row is None:
        raise Refused(f"no integration named {name!r} (see `gateway integration list`)")
    if row.kind != "tryton":
        raise Refused(
            f"integration {name!r} is a {row.kind} integration; mappings and login tests"
            " apply to tryton integrations"
        )
    return row


def _dossier(session: Session, slug: str) -> Dossier:
    row = session.scalars(select(Dossier).where(Dossier.slug == slug)).first()
    if row is None:
        raise Refused(f"no dossier {slug!r}")
    return row


def _effective(session: Session, args: argparse.Namespace) -> dict[str, Any]:
    row = _integration(session, args.integration)
    table = dict(row.options.get("mapping") or {})
    if args.dossier:
        table = merged(table, _dossier(session, args.dossier).overrides.get("mapping") or {})
    return parse_mapping(table, f"integration {row.name!r}").as_json()


def _show(session: Session, args: argparse.Namespace) -> int:
    mapping = _effective(session, args)
    print(json.dumps(mapping, ensure_ascii=False, indent=None if args.json else 2))
    return 0


def _value(text: str) -> Any:
    """Mapping values are codes and names (strings, even `604`), or true/false."""
    return {"true": True, "false": False}.get(text, text)


def _edit(table: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    result = json.loads(json.dumps(table))
    for pair in args.pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise Refused(f"{pair!r}: expected KEY=VALUE")
        name, dot, sub = key.partition(".")
        if dot:
            result.setdefault(name, {})[sub] = _value(text)
        else:
            result[name] = _value(text)
    for key in args.unset:
        name, dot, sub = key.partition(".")
        (result.get(name, {}) if dot else result).pop(sub if dot else name, None)
    return dict(result)


def _set(session: Session, args: argparse.Namespace) -> int:
    row = _integration(session, args.integration)
    source = "command line"
    if args.dossier:
        dossier = _dossier(session, args.dossier)
        override = _edit(dossier.overrides.get("mapping") or {}, args)
        parse_mapping(merged(row.options.get("mapping") or {}, override), source)
        dossier.overrides = {**dossier.overrides, "mapping": override}
        print(f"dossier {dossier.slug}: mapping override saved")
        return 0
    options = {**row.options, "mapping": _edit(row.options.get("mapping") or {}, args)}
    office.put_integration(session, IntegrationEntry(row.name, row.kind, options), source)
    print(f"integration {row.name}: mapping saved")
    return 0


def _adapter(row: Integration) -> Any:
    from gateway.outbound.tryton.adapter import TrytonAdapter

    opts = parse_options(row.kind, row.options, f"integration {row.name!r}", "")
    assert isinstance(opts, TrytonOptions)
    return TrytonAdapter(row.name, opts)


def _check(session: Session, args: argparse.Namespace) -> int:
    from gateway.outbound.tryton.check import mapping_problems

    row = _integration(session, args.integration)
    mapping = parse_mapping(_effective(session, args), f"integration {row.name!r}")

    async def run() -> list[str]:
        adapter = _adapter(row)
        try:
            rpc = await adapter.client()
            return await mapping_problems(rpc, mapping)
        finally:
            await adapter.close()

    try:
        problems = asyncio.run(run())
    except DeliveryError as exc:
        raise Refused(f"integration {row.name}: {exc.code}: {exc.text}") from exc
    for line in problems:
        print(line)
    if problems:
        raise Refused(f"integration {row.name}: {len(problems)} mapped codes cannot be used")
    print(f"integration {row.name}: every mapped code exists and can be used")
    return 0
