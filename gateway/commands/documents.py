"""`gateway doc`: list, show, send, retry and archive documents, the accountant's Inbox and Sent.

Each document is changed in its own transaction: one refusal (a sent document cannot be sent
again) is reported and stops no other.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.commands import rules as rules_commands
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
from gateway.outbound import queue
from gateway.store.db import Store
from gateway.store.models import Delivery, DocStatus, Document, Dossier, Event


def register(sub: Any) -> None:
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
        emit([view], args.json, pretty)
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


def _doc_line(d: dict[str, Any]) -> str:
    note = d["status_reason"] or (d["reason"] if d["type"] == "unrecognised" else "")
    head = f"{d['id']:>6} {d['dossier']:<16} {d['source']:<6} {d['status']:<8} {d['type']:<22}"
    return f"{head} {d['filename']}" + (f"  ({note})" if note else "")
