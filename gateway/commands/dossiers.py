"""`gateway dossier`, `gateway quarantine` and `gateway message`: the office's side of intake.

Dossiers, their addresses and allowed senders; the messages kept aside and why; one message
with its routes, documents and events.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import config, office
from gateway.commands.common import (
    EX_REFUSED,
    Refused,
    checked_store,
    emit,
    json_flag,
    load_settings,
    pretty,
    with_session,
)
from gateway.store.models import Document, Dossier, Event, Message


def register(sub: Any) -> None:
    _dossier_commands(sub)
    _quarantine_commands(sub)
    message = sub.add_parser("message", help="messages").add_subparsers(required=True)
    show_message = message.add_parser(
        "show", help="one message: verdict, routes, skipped parts, documents, events"
    )
    show_message.add_argument("id", type=int)
    json_flag(show_message)
    show_message.set_defaults(func=cmd_message_show)


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
        emit([office.dossier_view(row)], args.json, pretty)
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
        emit([view], args.json, pretty)
        return 0

    return with_session(args, work)


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


def _dossier_line(d: dict[str, Any]) -> str:
    auto = "auto-send" if d["auto_send"] else "manual"
    addresses = " ".join(d["addresses"])
    return f"{d['slug']:<20} {d['vat']:<16} {d['integration']:<16} {auto:<9} {addresses}"


def _message_line(m: dict[str, Any]) -> str:
    sender = m["header_from"] or m["mail_from"] or "-"
    where = ",".join(m["dossiers"]) or "-"
    return f"{m['id']:>6} {m['source']:<6} {where:<16} {sender[:40]:<40} {m['reason']}"
