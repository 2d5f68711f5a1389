"""`gateway rules ...` and `gateway doc set-type`: the policy, tried and overridden by hand.

`rules test` runs the daemon's own decision (`gateway.rules.stage.plan`) on a file or an .eml
for a dossier and stores nothing (the config is applied as at start, then rolled back), so an
accountant can see why a document would get its type before a client sends it. `doc set-type`
is the manual override, allowed only while the document has not been sent and is not on its
way.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mimetypes
import re
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import config, mime, office
from gateway.filenames import safe_filename
from gateway.outbound.queue import PENDING
from gateway.pipeline.duplicates import mark_duplicate
from gateway.pipeline.policy_store import (
    RuleNotFound,
    all_rules,
    delete_rule,
    put_rule,
    rule_view,
    rules_for,
)
from gateway.pipeline.runner import recognition_options
from gateway.rules.columns import expected_columns
from gateway.rules.dedupe import dedupe_key
from gateway.rules.policy import ACTION_KEYS, RuleError, make_rule
from gateway.rules.recognize import DossierFacts
from gateway.rules.stage import Envelope, Planned, plan
from gateway.store.db import check_current, open_store
from gateway.store.models import Delivery, DocStatus, DocType, Document, Dossier, Event

UNRECOGNISED = "unrecognised"
_HEADER_LINES = re.compile(rb"(?:[!-9;-~]+:[^\r\n]*\r?\n){2}")


class CommandRefused(Exception):
    """The request cannot be done; the message says why."""


def register(sub: Any) -> None:
    group = sub.add_parser("rules", help="the rules policy").add_subparsers(required=True)
    add = group.add_parser("add", help="create or update a rule (database)")
    add.add_argument("name")
    add.add_argument("--dossier", default="", help="dossier slug (default: gateway level)")
    add.add_argument("--position", type=int, help="order at its level (default: last)")
    add.add_argument("--match", action="append", default=[], metavar="KEY=GLOB", required=True)
    add.add_argument("--set-type", choices=[t.value for t in DocType])
    add.add_argument("--quarantine", action="store_true")
    add.add_argument("--drop", action="store_true", help="keep the document archived, unsent")
    add.add_argument("--no-auto-send", action="store_true")
    add.add_argument("--continue", dest="continue_", action="store_true")
    add.set_defaults(func=cmd_rules_add)
    lst = group.add_parser("list", help="rules in evaluation order (config and database)")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_rules_list)
    delete = group.add_parser("delete", help="delete a database rule")
    delete.add_argument("name")
    delete.add_argument("--dossier", default="")
    delete.set_defaults(func=cmd_rules_delete)
    test = group.add_parser("test", help="show the decision for a file or .eml; stores nothing")
    test.add_argument("file", type=Path)
    test.add_argument("--dossier", required=True)
    test.add_argument("--sender", default="", help="envelope sender (default: From)")
    test.add_argument("--recipient", default="", help="recipient (default: To, or the dossier's)")
    test.add_argument("--subject", default="", help="subject (default: the mail's)")
    test.add_argument("--json", action="store_true", help="one JSON object per document")
    test.set_defaults(func=cmd_rules_test)


def register_doc(group: Any) -> None:
    set_type = group.add_parser("set-type", help="set a document's type by hand (until sent)")
    set_type.add_argument("id", type=int)
    set_type.add_argument("type", choices=[*(t.value for t in DocType), UNRECOGNISED])
    set_type.set_defaults(func=cmd_doc_set_type)


@contextmanager
def _session(
    args: argparse.Namespace, commit: bool = True
) -> Iterator[tuple[config.Settings, Session]]:
    """A session on the configured database; with `commit=False` everything is rolled back."""
    settings = config.load(args.config)
    store = open_store(settings.database.url, settings.blob_dir, settings.database.busy_timeout)
    check_current(store.engine)
    session = store.session()
    try:
        yield settings, session
        if commit:
            session.commit()
    finally:
        session.rollback()
        session.close()
        store.engine.dispose()


def cmd_rules_add(args: argparse.Namespace) -> int:
    match = dict(_pair(text) for text in args.match)
    actions: dict[str, Any] = {"set_type": args.set_type} if args.set_type else {}
    actions |= {"quarantine": True} if args.quarantine else {}
    actions |= {"drop": True} if args.drop else {}
    actions |= {"auto_send": False} if args.no_auto_send else {}
    try:
        rule = make_rule(args.name, match, actions, args.continue_, args.dossier, "database")
    except RuleError as exc:
        known = ", ".join(f"--{key.replace('_', '-')}" for key in sorted(ACTION_KEYS))
        raise CommandRefused(f"rule {args.name!r}: {exc} (actions: {known})") from None
    with _session(args) as (_, session):
        try:
            row = put_rule(session, rule, args.position)
        except RuleNotFound as exc:
            raise CommandRefused(str(exc)) from None
        print(f"rule {row.name} saved (position {row.position})")
    return 0


def cmd_rules_list(args: argparse.Namespace) -> int:
    with _session(args) as (settings, session):
        for rule in all_rules(session, settings.rules):
            view = rule_view(rule)
            if args.json:
                print(json.dumps(view, ensure_ascii=False))
                continue
            level = f"dossier {rule.dossier}" if rule.dossier else "gateway"
            then = " (continue)" if rule.continue_ else ""
            rule_text = f"{view['match']} -> {view['actions']}{then}"
            print(f"{rule.name:<24} {level:<20} {rule.source:<8} {rule_text}")
    return 0


def cmd_rules_delete(args: argparse.Namespace) -> int:
    with _session(args) as (_, session):
        try:
            delete_rule(session, args.name, args.dossier)
        except RuleNotFound as exc:
            raise CommandRefused(str(exc)) from None
        print(f"rule {args.name} deleted")
    return 0


def cmd_rules_test(args: argparse.Namespace) -> int:
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise CommandRefused(f"{args.file}: {exc.strerror or exc}") from None
    with _session(args, commit=False) as (settings, session):
        # The daemon applies the config's dossiers at start; do the same, then roll it back.
        office.provision(session, settings)
        dossier = session.scalars(select(Dossier).where(Dossier.slug == args.dossier)).first()
        if dossier is None:
            raise CommandRefused(f"no dossier {args.dossier!r}")
        try:
            parts, envelope = _input(args, data, dossier, settings.mime)
        except mime.Quarantine as exc:
            raise CommandRefused(f"{args.file}: the message would be quarantined: {exc}") from None
        facts = DossierFacts(dossier.vat_number, dossier.company_number, tuple(dossier.ibans))
        policy = rules_for(session, dossier, settings.rules)
        options = recognition_options(settings.recognition, settings.source)
        for item in plan(parts, facts, policy, envelope, options):
            part = parts[item.index]
            duplicate_of = _duplicate_of(session, dossier, part, item)
            view = _decision(part, item) | {
                "duplicate_of": duplicate_of,
                "auto_send": item.outcome.auto_send
                and dossier.auto_send
                and dossier.integration_id is not None
                and item.outcome.doc_type is not None
                and duplicate_of is None,
            }
            print(json.dumps(view, ensure_ascii=False) if args.json else _decision_text(view))
        if not parts:
            print(f"{args.file}: no attachments")
    return 0


def cmd_doc_set_type(args: argparse.Namespace) -> int:
    with _session(args) as (_, session):
        doc = session.get(Document, args.id)
        if doc is None:
            raise CommandRefused(f"no document {args.id}")
        if doc.status is DocStatus.SENT:
            raise CommandRefused(f"document {doc.id} was already sent; its type is final")
        pending = session.scalars(
            select(Delivery.id).where(Delivery.document_id == doc.id, Delivery.state.in_(PENDING))
        ).first()
        if pending is not None:
            raise CommandRefused(f"document {doc.id} is on its way (delivery {pending}); wait")
        old = doc.doc_type.value if doc.doc_type else UNRECOGNISED
        new = None if args.type == UNRECOGNISED else DocType(args.type)
        doc.doc_type = new
        doc.reason = f"set by hand to {args.type} (was {old}: {doc.reason})"[:2000]
        doc.dedupe_key = dedupe_key(new, doc.facts)
        session.add(
            Event(kind="type_set", document_id=doc.id, detail={"from": old, "to": args.type})
        )
        print(f"document {doc.id}: {old} -> {args.type}")
    return 0


def _input(
    args: argparse.Namespace, data: bytes, dossier: Dossier, limits: config.MimeSettings
) -> tuple[list[mime.Part], Envelope]:
    """An .eml is taken apart like the daemon does; any other file is one bare document.
    Sender, recipient and subject come from the options, else the mail's headers, else the
    dossier's first address (the envelope of a real delivery is not in an .eml)."""
    own = next((a.address for a in dossier.addresses), "")
    if args.file.suffix.lower() == ".eml" or _HEADER_LINES.match(data):
        message = mime.parse(data, headers_only=True)
        head = mime.headers(message)
        to = [address for _, address in getaddresses([str(message.get("To", ""))]) if address]
        recipients = (args.recipient,) if args.recipient else tuple(to) or (own,)
        sender = args.sender or parseaddr(head.header_from)[1]
        envelope = Envelope(sender, recipients, args.subject or head.subject)
        return mime.extract(data, limits).parts, envelope
    name = safe_filename(args.file.name)
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    recipient = args.recipient or own
    envelope = Envelope(args.sender, (recipient,) if recipient else (), args.subject)
    return [mime.Part(name, media_type, data)], envelope


def _duplicate_of(session: Session, dossier: Dossier, part: mime.Part, item: Planned) -> int | None:
    """The document this one would duplicate, found by the daemon's own check; the probe is
    never added to the session, so nothing is stored."""
    probe = Document(
        dossier=dossier,
        blob_sha256=hashlib.sha256(part.data).hexdigest(),
        dedupe_key=dedupe_key(item.outcome.doc_type, item.found.facts),
        facts=item.found.facts,
        status_reason="",
    )
    mark_duplicate(session, probe, item.found.text)
    return probe.duplicate_of_id


def _decision(part: mime.Part, item: Planned) -> dict[str, Any]:
    outcome = item.outcome
    return {
        "file": part.filename,
        "type": outcome.doc_type.value if outcome.doc_type else UNRECOGNISED,
        "reason": outcome.reason,
        "rules": outcome.matched,
        "visual": item.visual.filename if item.visual else None,
        **expected_columns(item.found.facts),
    }


def _decision_text(view: dict[str, Any]) -> str:
    lines = [f"{view['file']}: {view['type']} ({view['reason']})"]
    lines += [
        f"  rule {m['rule']} [{m['level']}]: {m['why']} -> {m['actions']}" for m in view["rules"]
    ]
    lines += [f"  visual: {view['visual']}"] if view["visual"] else []
    lines += [f"  duplicate of document {view['duplicate_of']}"] if view["duplicate_of"] else []
    lines += [f"  auto-send: {'yes' if view['auto_send'] else 'no'}"]
    return "\n".join(lines)


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise CommandRefused(f"--match {text!r}: expected KEY=GLOB")
    return key.strip(), value
