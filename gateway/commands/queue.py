"""`gateway queue` and `gateway status`: mailq and postsuper for documents.

They read and change the database directly, so they work while the daemon is down (the
daemon picks the changes up at its next look at the queue).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.commands.common import checked_store, json_flag, load_settings, to_json, with_session
from gateway.outbound import queue
from gateway.store.models import Delivery, DeliveryState, Document, Dossier, utcnow

PENDING = [
    DeliveryState.QUEUED,
    DeliveryState.SENDING,
    DeliveryState.DEFERRED,
    DeliveryState.HELD,
]
MARK = {DeliveryState.SENDING: "*", DeliveryState.HELD: "!"}


def register(sub: Any) -> None:
    parser = sub.add_parser("queue", help="pending deliveries (like mailq); hold/release/…")
    parser.add_argument("--all", action="store_true", help="include failed deliveries")
    json_flag(parser)
    parser.set_defaults(func=lambda args: with_session(args, lambda s: _list(s, args)))
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    for action, text in (
        ("hold", "keep deliveries from being tried"),
        ("release", "let held deliveries be tried again"),
        ("requeue", "try deferred, held or failed deliveries again now"),
        ("flush", "try every deferred delivery now"),
    ):
        one = actions.add_parser(action, help=text)
        if action != "flush":
            one.add_argument("ids", nargs="+", metavar="ID|ALL", help="delivery ids, or ALL")
        one.set_defaults(func=_operate)
    status = sub.add_parser("status", help="documents per dossier and status")
    json_flag(status)
    status.set_defaults(func=lambda args: with_session(args, lambda s: _status(s, args)))


def _age(since: datetime) -> str:
    seconds = int((utcnow() - since).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _view(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "document": d.document_id,
        "dossier": d.document.dossier.slug,
        "integration": d.integration.name,
        "state": d.state.value,
        "attempts": d.attempts,
        "age_seconds": int((utcnow() - d.created_at).total_seconds()),
        "next_attempt_at": d.next_attempt_at.isoformat(),
        "reason": f"{d.last_error_code}: {d.last_error_text}" if d.last_error_code else "",
    }


def _line(d: dict[str, Any], delivery: Delivery) -> str:
    mark = MARK.get(delivery.state, " ")
    head = (
        f"{d['id']:>6}{mark} {d['state']:<8} {_age(delivery.created_at):>5} "
        f"{d['attempts']:>3}x doc {d['document']:<6} {d['dossier']:<16} -> {d['integration']}"
    )
    return head + (f"\n        ({d['reason']})" if d["reason"] else "")


def _list(session: Session, args: argparse.Namespace) -> int:
    states = [*PENDING, DeliveryState.FAILED] if args.all else PENDING
    rows = session.scalars(
        select(Delivery).where(Delivery.state.in_(states)).order_by(Delivery.created_at)
    ).all()
    for delivery in rows:
        view = _view(delivery)
        print(to_json(view) if args.json else _line(view, delivery))
    if not args.json:
        print(f"-- {len(rows)} deliver{'y' if len(rows) == 1 else 'ies'} in the queue")
    return 0


def _targets(session: Session, args: argparse.Namespace) -> list[Delivery]:
    ids = getattr(args, "ids", ["ALL"])
    if ids == ["ALL"] or args.action == "flush":
        allowed, _ = queue.OPERATOR_MOVES[args.action]
        return list(session.scalars(select(Delivery).where(Delivery.state.in_(allowed))))
    if "ALL" in ids or any(not i.isdigit() for i in ids):
        raise queue.OperatorRefused("give delivery ids, or ALL (upper case) alone")
    found = list(session.scalars(select(Delivery).where(Delivery.id.in_([int(i) for i in ids]))))
    missing = sorted({int(i) for i in ids} - {d.id for d in found})
    if missing:
        raise queue.OperatorRefused(f"no delivery {', '.join(map(str, missing))}")
    return found


def _operate(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    refused = 0
    with checked_store(settings).session.begin() as session:
        targets = _targets(session, args)
        for delivery in targets:
            try:
                queue.operate(session, args.action, delivery, settings.delivery)
            except queue.OperatorRefused as exc:
                print(f"gateway: {exc}", file=sys.stderr)
                refused += 1
    print(f"{args.action}: {len(targets) - refused} deliver{'y' if len(targets) == 1 else 'ies'}")
    return 1 if refused else 0


def _status(session: Session, args: argparse.Namespace) -> int:
    rows = session.execute(
        select(Dossier.slug, Document.status, func.count())
        .join(Document, Document.dossier_id == Dossier.id)
        .group_by(Dossier.slug, Document.status)
        .order_by(Dossier.slug)
    ).all()
    per: dict[str, dict[str, int]] = {}
    for slug, status, count in rows:
        per.setdefault(slug, {})[status.value] = count
    for slug, counts in per.items():
        view = {
            "dossier": slug,
            **{s: counts.get(s, 0) for s in ("inbox", "sent", "failed", "rejected")},
        }
        print(to_json(view) if args.json else " ".join(f"{k}={v}" for k, v in view.items()))
    return 0
