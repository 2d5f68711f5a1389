"""The `gateway` command: run the daemon, check the config, and inspect or repair the state.

Exit statuses follow sysexits: 78 for a bad config (the message names file and key), 69 when
the database is unreachable or behind its migrations, 1 when a request is refused (the message
says why), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tomllib
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from gateway import config, office
from gateway.commands import mapping as mapping_commands
from gateway.commands import queue as queue_commands
from gateway.commands.common import (
    Refused,
    checked_store,
    emit,
    json_flag,
    load_settings,
    with_session,
)
from gateway.logging import configure as configure_logging
from gateway.outbound import queue
from gateway.store.db import SchemaOutdated, check_current, open_store, upgrade
from gateway.store.models import Delivery, DocStatus, Document, Dossier, Event, Integration

EX_REFUSED = 1
EX_UNAVAILABLE = 69
DEFAULT_CONFIG = "/etc/gateway/gateway.toml"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except config.ConfigError as exc:
        print(f"gateway: config error: {exc}", file=sys.stderr)
        return config.EX_CONFIG
    except (Refused, office.SetupError, queue.NotSendable) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EX_REFUSED
    except SchemaOutdated as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    except SQLAlchemyError as exc:
        print(f"gateway: database error: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    parser.add_argument(
        "-c",
        "--config",
        default=os.environ.get("GATEWAY_CONFIG", DEFAULT_CONFIG),
        help=f"config file (default: $GATEWAY_CONFIG or {DEFAULT_CONFIG})",
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    sub.add_parser("run", help="run the daemon in the foreground").set_defaults(func=cmd_run)
    check = sub.add_parser("check-config", help="check a config file and exit")
    check.add_argument("file", nargs="?", help="file to check (default: --config)")
    check.set_defaults(func=cmd_check_config)
    db = sub.add_parser("db", help="database schema").add_subparsers(required=True)
    db.add_parser("upgrade", help="apply the migrations").set_defaults(func=cmd_db_upgrade)
    _dossier_commands(sub)
    _integration_commands(sub)
    _doc_commands(sub)
    queue_commands.register(sub)
    mapping_commands.register(sub)
    return parser


def _dossier_commands(sub: Any) -> None:
    group = sub.add_parser("dossier", help="dossiers").add_subparsers(required=True)
    add = group.add_parser("add", help="create or update a dossier")
    add.add_argument("slug")
    add.add_argument("--integration", required=True, help="integration name, or 'none'")
    add.add_argument("--name", default="")
    add.add_argument("--vat", default="")
    add.add_argument("--company-number", default="")
    add.add_argument("--accounting-file-id", default="")
    add.add_argument("--address", action="append", default=[], help="intake address (repeat)")
    add.add_argument("--auto-send", action="store_true", help="send recognised documents")
    add.set_defaults(func=cmd_dossier_add)
    lst = group.add_parser("list", help="list dossiers")
    json_flag(lst)
    lst.set_defaults(func=cmd_dossier_list)
    show = group.add_parser("show", help="show one dossier")
    show.add_argument("slug")
    json_flag(show)
    show.set_defaults(func=cmd_dossier_show)


def _integration_commands(sub: Any) -> None:
    group = sub.add_parser("integration", help="integrations").add_subparsers(required=True)
    add = group.add_parser("add", help="create or update an integration")
    add.add_argument("name")
    add.add_argument("--kind", required=True, help="directory, sftp or tryton")
    add.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="kind option (repeat)"
    )
    add.set_defaults(func=cmd_integration_add)
    lst = group.add_parser("list", help="list integrations")
    json_flag(lst)
    lst.set_defaults(func=cmd_integration_list)
    mapping_commands.register_integration_test(group)


def _doc_commands(sub: Any) -> None:
    group = sub.add_parser("doc", help="documents").add_subparsers(required=True)
    lst = group.add_parser("list", help="list documents, newest first")
    lst.add_argument("--dossier")
    lst.add_argument("--status", choices=[s.value for s in DocStatus])
    lst.add_argument("--limit", type=int, default=100)
    json_flag(lst)
    lst.set_defaults(func=cmd_doc_list)
    show = group.add_parser("show", help="one document with its deliveries and events")
    show.add_argument("id", type=int)
    json_flag(show)
    show.set_defaults(func=cmd_doc_show)
    send = group.add_parser("send", help="queue documents for delivery")
    send.add_argument("ids", type=int, nargs="+", metavar="ID")
    send.set_defaults(func=cmd_doc_send)


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.daemon import serve

    settings = load_settings(args)
    configure_logging(settings.gateway.log_level, settings.gateway.log_format)
    asyncio.run(serve(settings))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    path = args.file or args.config
    settings = config.load(path)
    print(
        f"{path}: ok ({len(settings.integrations)} integrations, {len(settings.dossiers)} dossiers)"
    )
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    store = open_store(settings.database.url, settings.blob_dir, settings.database.busy_timeout)
    upgrade(store.engine)
    check_current(store.engine)
    print("database schema is up to date")
    return 0


def cmd_dossier_add(args: argparse.Namespace) -> int:
    spec = config.DossierSettings(
        slug=args.slug,
        integration=args.integration,
        name=args.name,
        vat=args.vat,
        company_number=args.company_number,
        accounting_file_id=args.accounting_file_id,
        addresses=args.address,
        auto_send=args.auto_send,
    )

    def work(session: Session) -> int:
        row = office.put_dossier(session, spec)
        print(f"dossier {row.slug} saved (id {row.id})")
        return 0

    return with_session(args, work)


def cmd_dossier_list(args: argparse.Namespace) -> int:
    def work(session: Session) -> int:
        rows = session.scalars(select(Dossier).order_by(Dossier.slug))
        emit((office.dossier_view(r) for r in rows), args.json, _dossier_line)
        return 0

    return with_session(args, work)


def cmd_dossier_show(args: argparse.Namespace) -> int:
    def work(session: Session) -> int:
        row = session.scalars(select(Dossier).where(Dossier.slug == args.slug)).first()
        if row is None:
            raise Refused(f"no dossier {args.slug!r}")
        emit([office.dossier_view(row)], args.json, _pretty)
        return 0

    return with_session(args, work)


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
        emit((office.integration_view(r) for r in rows), args.json, _integration_line)
        return 0

    return with_session(args, work)


def doc_view(doc: Document) -> dict[str, Any]:
    return {
        "id": doc.id,
        "dossier": doc.dossier.slug,
        "filename": doc.filename,
        "type": doc.doc_type.value if doc.doc_type else "unrecognised",
        "status": doc.status.value,
        "reason": doc.reason,
        "status_reason": doc.status_reason,
        "media_type": doc.media_type,
        "size": doc.size,
        "sha256": doc.blob_sha256,
        "message": doc.message_id,
        "created_at": doc.created_at.isoformat(),
        "sent_at": doc.sent_at.isoformat() if doc.sent_at else None,
    }


def cmd_doc_list(args: argparse.Namespace) -> int:
    def work(session: Session) -> int:
        query = select(Document).join(Dossier).order_by(Document.id.desc()).limit(args.limit)
        if args.dossier:
            query = query.where(Dossier.slug == args.dossier)
        if args.status:
            query = query.where(Document.status == DocStatus(args.status))
        emit((doc_view(d) for d in session.scalars(query)), args.json, _doc_line)
        return 0

    return with_session(args, work)


def cmd_doc_show(args: argparse.Namespace) -> int:
    def work(session: Session) -> int:
        doc = session.get(Document, args.id)
        if doc is None:
            raise Refused(f"no document {args.id}")
        view = doc_view(doc) | {"facts": doc.facts}
        deliveries = session.scalars(select(Delivery).where(Delivery.document_id == doc.id))
        view["deliveries"] = [_delivery_view(d) for d in deliveries]
        events = session.scalars(
            select(Event).where(Event.document_id == doc.id).order_by(Event.id)
        )
        view["events"] = [{"at": e.at.isoformat(), "kind": e.kind, **e.detail} for e in events]
        emit([view], args.json, _pretty)
        return 0

    return with_session(args, work)


def _delivery_view(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "integration": d.integration.name,
        "state": d.state.value,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at.isoformat(),
        "last_error": f"{d.last_error_code}: {d.last_error_text}" if d.last_error_code else "",
        "remote_ref": d.remote_ref,
    }


def cmd_doc_send(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    store = checked_store(settings)
    refused = 0
    for doc_id in args.ids:
        with store.session.begin() as session:
            doc = session.get(Document, doc_id)
            try:
                if doc is None:
                    raise Refused(f"no document {doc_id}")
                delivery = queue.enqueue(session, doc, settings.delivery)
            except (Refused, queue.NotSendable) as exc:
                print(f"gateway: {exc}", file=sys.stderr)
                refused += 1
                continue
            print(f"document {doc_id}: queued (delivery {delivery.id})")
    return EX_REFUSED if refused else 0


def _pretty(row: dict[str, Any]) -> str:
    return json.dumps(row, indent=2, ensure_ascii=False)


def _dossier_line(d: dict[str, Any]) -> str:
    auto = "auto-send" if d["auto_send"] else "manual"
    addresses = " ".join(d["addresses"])
    return f"{d['slug']:<20} {d['vat']:<16} {d['integration']:<16} {auto:<9} {addresses}"


def _integration_line(i: dict[str, Any]) -> str:
    return f"{i['name']:<20} {i['kind']:<10}"


def _doc_line(d: dict[str, Any]) -> str:
    note = d["status_reason"] or (d["reason"] if d["type"] == "unrecognised" else "")
    return f"{d['id']:>6} {d['dossier']:<16} {d['status']:<8} {d['type']:<22} {d['filename']}" + (
        f"  ({note})" if note else ""
    )
