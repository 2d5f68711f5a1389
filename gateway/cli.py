"""The `gateway` command: run the daemon, check the config, and inspect or repair the state.

Exit statuses follow sysexits: 78 for a bad config (the message names file and key), 69 when
the database is unreachable or behind its migrations, 1 when a request is refused (the message
says why), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import tomllib
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from gateway import config, office
from gateway.commands import mapping as mapping_commands
from gateway.commands import queue as queue_commands
from gateway.commands import rules as rules_commands
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
from gateway.store.db import SchemaOutdated, Store, check_current, open_store, upgrade
from gateway.store.models import (
    Delivery,
    DeliveryState,
    DocStatus,
    Document,
    Dossier,
    Event,
    Integration,
    Message,
    utcnow,
)

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
    except (Refused, office.SetupError, queue.NotSendable, rules_commands.CommandRefused) as exc:
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
    rules_commands.register(sub)
    queue_commands.register(sub)
    _quarantine_commands(sub)
    message = sub.add_parser("message", help="messages").add_subparsers(required=True)
    show_message = message.add_parser(
        "show", help="one message: verdict, routes, skipped parts, documents, events"
    )
    show_message.add_argument("id", type=int)
    json_flag(show_message)
    show_message.set_defaults(func=cmd_message_show)
    pw = sub.add_parser(
        "smtp-password", help="print a smtp.auth_file line for USER (password from stdin)"
    )
    pw.add_argument("user")
    pw.set_defaults(func=cmd_smtp_password)
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
    add.add_argument("--iban", action="append", default=[], help="dossier bank account (repeat)")
    add.set_defaults(func=cmd_dossier_add)
    lst = group.add_parser("list", help="list dossiers")
    json_flag(lst)
    lst.set_defaults(func=cmd_dossier_list)
    show = group.add_parser("show", help="show one dossier")
    show.add_argument("slug")
    json_flag(show)
    show.set_defaults(func=cmd_dossier_show)
    _sender_commands(group)


def _sender_commands(group: Any) -> None:
    for name, verb in (("allow", "add to"), ("disallow", "remove from")):
        cmd = group.add_parser(name, help=f"{verb} the dossier's allowed senders")
        cmd.add_argument("slug")
        cmd.add_argument("entries", nargs="+", metavar="ADDRESS|@DOMAIN")
        cmd.set_defaults(func=cmd_dossier_senders, change=name)
    lst = group.add_parser("senders", help="the dossier's allowed senders (empty: anyone)")
    lst.add_argument("slug")
    json_flag(lst)
    lst.set_defaults(func=cmd_dossier_senders, change=None, entries=[])


def _quarantine_commands(sub: Any) -> None:
    group = sub.add_parser("quarantine", help="messages kept aside").add_subparsers(required=True)
    lst = group.add_parser("list", help="quarantined messages, oldest first")
    json_flag(lst)
    lst.set_defaults(func=cmd_quarantine_list)
    for name, what in (
        ("release", "process the messages after all (sender checks are skipped)"),
        ("drop", "never process the messages (they stay recorded as dropped)"),
    ):
        cmd = group.add_parser(name, help=what)
        cmd.add_argument("ids", type=int, nargs="+", metavar="ID")
        cmd.set_defaults(func=cmd_quarantine_act, action=name)


def _integration_commands(sub: Any) -> None:
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
    send = group.add_parser("send", help="queue Inbox documents for delivery")
    send.add_argument("ids", type=int, nargs="*", metavar="ID")
    send.add_argument("--all", action="store_true", help="every Inbox document of --dossier")
    send.add_argument("--dossier", help="with --all: the dossier whose Inbox is sent")
    send.set_defaults(func=cmd_doc_send)
    rules_commands.register_doc(group)
    retry = group.add_parser("retry", help="send failed documents again now")
    retry.add_argument("ids", type=int, nargs="+", metavar="ID")
    retry.set_defaults(func=cmd_doc_retry)
    archive = group.add_parser("archive", help="archive sent documents")
    archive.add_argument("ids", type=int, nargs="+", metavar="ID")
    archive.set_defaults(func=cmd_doc_archive)


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
        ibans=args.iban,
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


def cmd_dossier_senders(args: argparse.Namespace) -> int:
    def work(session: Session) -> int:
        if args.change == "allow":
            patterns = office.allow_senders(session, args.slug, args.entries)
        elif args.change == "disallow":
            patterns = office.disallow_senders(session, args.slug, args.entries)
        else:
            patterns = office.allowed_senders(session, args.slug)
        if getattr(args, "json", False):
            print(json.dumps({"dossier": args.slug, "allowed_senders": patterns}))
        elif patterns:
            print("\n".join(patterns))
        else:
            print(f"dossier {args.slug}: no allowed senders, anyone may send")
        return 0

    return with_session(args, work)


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    def work(session: Session) -> int:
        rows = session.scalars(
            select(Message).where(Message.verdict == "quarantined").order_by(Message.id)
        )
        emit((message_view(m) for m in rows), args.json, _message_line)
        return 0

    return with_session(args, work)


def cmd_quarantine_act(args: argparse.Namespace) -> int:
    store = checked_store(load_settings(args))
    refused = 0
    for message_id in args.ids:
        with store.session.begin() as session:
            row = session.get(Message, message_id)
            if row is None or row.verdict != "quarantined":
                print(f"gateway: message {message_id} is not in quarantine", file=sys.stderr)
                refused += 1
                continue
            if args.action == "release":
                row.verdict = "released"
                row.processed_at = None
            else:
                row.verdict = "dropped"
            session.add(
                Event(kind=f"message_{row.verdict}", message_id=row.id, detail={"was": row.reason})
            )
            print(f"message {message_id}: {row.verdict}")
    return EX_REFUSED if refused else 0


def cmd_message_show(args: argparse.Namespace) -> int:
    def work(session: Session) -> int:
        row = session.get(Message, args.id)
        if row is None:
            raise Refused(f"no message {args.id}")
        view = message_view(row) | {"routes": row.routes, "auth": row.auth}
        docs = session.scalars(select(Document).where(Document.message_id == row.id))
        view["documents"] = [
            {"id": d.id, "dossier": d.dossier.slug, "filename": d.filename} for d in docs
        ]
        events = session.scalars(select(Event).where(Event.message_id == row.id).order_by(Event.id))
        view["events"] = [{"at": e.at.isoformat(), "kind": e.kind, **e.detail} for e in events]
        emit([view], args.json, _pretty)
        return 0

    return with_session(args, work)


def cmd_smtp_password(args: argparse.Namespace) -> int:
    from gateway.intake.smtpd.login import hash_password

    if ":" in args.user or not args.user.strip():
        raise Refused(f"user {args.user!r}: must be non-empty and contain no ':'")
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline()
    password = password.rstrip("\r\n")
    if not password:
        raise Refused("empty password")
    print(f"{args.user}:{hash_password(password)}")
    return 0


def message_view(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "source": m.source,
        "source_ref": m.source_ref,
        "received_at": m.received_at.isoformat(),
        "mail_from": m.mail_from,
        "header_from": m.header_from,
        "subject": m.subject,
        "dossiers": [r["dossier"] for r in m.routes],
        "verdict": m.verdict,
        "reason": m.reason,
        "size": m.size,
    }


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
        "source": doc.message.source if doc.message else "",
        "created_at": doc.created_at.isoformat(),
        "sent_at": doc.sent_at.isoformat() if doc.sent_at else None,
        "archived": doc.archived,
        "duplicate_of": doc.duplicate_of_id,
        "visual": doc.visual_filename or None,
        "rules": [entry["rule"] for entry in doc.matched_rules],
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
    if args.all == bool(args.ids) or (args.all and not args.dossier):
        raise Refused("give document IDs, or --all --dossier SLUG")
    if args.dossier and not args.all:
        raise Refused("--dossier goes with --all")
    settings = load_settings(args)
    store = checked_store(settings)
    ids = _inbox_ids(store, args.dossier) if args.all else args.ids
    if args.all and not ids:
        print(f"dossier {args.dossier}: nothing in the Inbox")

    def send(session: Session, doc: Document) -> str:
        delivery = queue.send(session, doc, settings.delivery)
        return f"queued (delivery {delivery.id})"

    return _each_document(store, ids, send)


def _inbox_ids(store: Store, slug: str) -> list[int]:
    with store.session() as session:
        dossier = session.scalars(select(Dossier).where(Dossier.slug == slug)).first()
        if dossier is None:
            raise Refused(f"no dossier {slug!r}")
        return list(
            session.scalars(
                select(Document.id)
                .where(Document.dossier_id == dossier.id, Document.status == DocStatus.INBOX)
                .order_by(Document.id)
            )
        )


def cmd_doc_retry(args: argparse.Namespace) -> int:
    settings = load_settings(args)

    def retry(session: Session, doc: Document) -> str:
        delivery = queue.retry(session, doc, settings.delivery)
        return f"queued again (delivery {delivery.id})"

    return _each_document(checked_store(settings), args.ids, retry)


def cmd_doc_archive(args: argparse.Namespace) -> int:
    def archive(session: Session, doc: Document) -> str:
        return "archived" if queue.archive(session, doc) else "already archived"

    return _each_document(checked_store(load_settings(args)), args.ids, archive)


def _each_document(
    store: Store, ids: Iterable[int], action: Callable[[Session, Document], str]
) -> int:
    """Apply `action` to each document in its own transaction; one refusal stops no other."""
    refused = 0
    for doc_id in ids:
        with store.session.begin() as session:
            doc = session.get(Document, doc_id)
            try:
                if doc is None:
                    raise Refused(f"no document {doc_id}")
                outcome = action(session, doc)
            except (Refused, queue.NotSendable) as exc:
                print(f"gateway: {exc}", file=sys.stderr)
                refused += 1
                continue
            print(f"document {doc_id}: {outcome}")
    return EX_REFUSED if refused else 0


def _pretty(row: dict[str, Any]) -> str:
    return json.dumps(row, indent=2, ensure_ascii=False)


def _dossier_line(d: dict[str, Any]) -> str:
    auto = "auto-send" if d["auto_send"] else "manual"
    addresses = " ".join(d["addresses"])
    return f"{d['slug']:<20} {d['vat']:<16} {d['integration']:<16} {auto:<9} {addresses}"


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


def _doc_line(d: dict[str, Any]) -> str:
    note = d["status_reason"] or (d["reason"] if d["type"] == "unrecognised" else "")
    head = f"{d['id']:>6} {d['dossier']:<16} {d['source']:<6} {d['status']:<8} {d['type']:<22}"
    return f"{head} {d['filename']}" + (f"  ({note})" if note else "")


def _message_line(m: dict[str, Any]) -> str:
    sender = m["header_from"] or m["mail_from"] or "-"
    where = ",".join(m["dossiers"]) or "-"
    return f"{m['id']:>6} {m['source']:<6} {where:<16} {sender[:40]:<40} {m['reason']}"
