"""The one door every intake goes through: store the raw message durably, then commit its row.

Only after `accept_message` returns may a door acknowledge (SMTP 250, IMAP post-action, folder
removal). The same raw message (same Message-ID and bytes) for the same dossiers is stored once,
whichever door it came through: a second arrival returns the first row, so a client retrying
after a lost 250, an IMAP re-scan and a file dropped twice all end in one message.

Two ways in, one row: `accept_message` takes bytes in memory (IMAP, folder); the SMTP door
streams DATA to a spool file, `adopt_spooled` makes that file the blob, and `commit_arrivals`
commits the rows of many sessions in one transaction (`group_commit`). A message small enough
to be a blob row (`blob_rows.ROW_LIMIT`, which a message the door took whole in memory always
is) never becomes a file: its bytes ride in its row's transaction. Every row is built by
`arrive` and inserted by `_insert`, so key, columns, held bytes, event and metrics cannot drift
apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway import metrics
from gateway.intake.spool import END_OF_HEAD, HEAD_LIMIT, Held, Spooled
from gateway.mime import plain_headers
from gateway.store import blob_rows
from gateway.store.blobs import fsync_dir
from gateway.store.db import Store
from gateway.store.models import Base, Event, Message, utcnow

HINTS = ("purchase", "sales", "bank", "other")
MESSAGES = Base.metadata.tables[Message.__tablename__]
EVENTS = Base.metadata.tables[Event.__tablename__]
# The intake statements, on the tables rather than the mapped classes (even the ORM's bulk path
# costs as much CPU again as the group commit's transaction) and built once. The new rows come
# back with their keys rather than in parameter order: asking for the order makes SQLite's
# dialect insert one row per statement.
KNOWN_KEYS = select(MESSAGES.c.intake_key, MESSAGES.c.id).where(
    MESSAGES.c.intake_key.in_(bindparam("keys", expanding=True))
)
INSERT_MESSAGES = insert(MESSAGES).returning(MESSAGES.c.intake_key, MESSAGES.c.id)
INSERT_EVENTS = insert(EVENTS)


@dataclass(frozen=True)
class Route:
    """One dossier a message is for, with the document-type hint its address carried."""

    dossier: str
    hint: str = ""


@dataclass(frozen=True)
class Envelope:
    source: str
    mail_from: str
    recipients: list[str]
    routes: list[Route] = field(default_factory=list)
    source_ref: str = ""


@dataclass(frozen=True)
class Accepted:
    message_id: int
    duplicate: bool


@dataclass(frozen=True)
class Arrival:
    """A message made durable as a blob, or `held` in memory to be committed with its row,
    whose row is not committed yet."""

    intake_key: str
    # The `Message` columns; a fresh row is built from them for every commit attempt.
    fields: dict[str, Any]
    # When intake began, for the INTAKE_SECONDS histogram.
    started: float = field(default_factory=time.monotonic)
    # The blob's directory when its new entry is not durable yet: `commit_arrivals` syncs it.
    unsynced: Path | None = None
    # The raw message, when it is to be made durable in the row's own transaction.
    held: bytes | None = None


# Called inside the storing transaction with the message's id (IMAP records its UID there).
Recorder = Callable[[Session, int], None]
# A transaction on a connection, committed when the block ends without an error.
Begin = Callable[[], AbstractContextManager[Connection]]


class KeptConnection:
    """One database connection kept open from one transaction to the next, for one thread.

    The SMTP door's group commit runs a transaction for every batch, hundreds a second and
    most of them of one message; a pooled connection for each (check-out, PostgreSQL's
    pre-ping, the rollback that resets it at check-in) cost about a sixth of the batch's CPU.
    A transaction that fails closes the connection, so the next one begins on a fresh one
    from the pool, as it would have without this.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Connection | None = None

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        connection = self._connection or self.engine.connect()
        self._connection = None
        try:
            with connection.begin():
                yield connection
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    def close(self) -> None:
        """Give the connection back to the pool; a later `begin` takes another."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def intake_key(message_id: str, digest: str, routes: list[Route]) -> str:
    dossiers = ",".join(sorted({r.dossier for r in routes}))
    return hashlib.sha256(f"{message_id}\0{digest}\0{dossiers}".encode()).hexdigest()


def arrive(
    raw_head: bytes,
    digest: str,
    size: int,
    envelope: Envelope,
    *,
    started: float,
    quarantine: str = "",
    auth: dict[str, Any] | None = None,
    unsynced: Path | None = None,
    held: bytes | None = None,
) -> Arrival:
    """The row of a message whose blob `digest` is durable (or will be once `unsynced`, its
    directory, is synced, or whose bytes are `held` for the row's transaction): the one place
    columns are chosen.

    `raw_head` is the message's header block (or the whole message); nothing past it is read.
    """
    head = plain_headers.read(raw_head)
    key = intake_key(head.message_id, digest, envelope.routes)
    fields: dict[str, Any] = {
        "source": envelope.source,
        "intake_key": key,
        "mail_from": envelope.mail_from,
        "recipients": envelope.recipients,
        "header_from": head.header_from,
        "message_id": head.message_id,
        "subject": head.subject,
        "raw_sha256": digest,
        "size": size,
        "source_ref": envelope.source_ref,
        "routes": [{"dossier": r.dossier, "hint": r.hint} for r in envelope.routes],
        "auth": auth or {},
        # Every arrival names the same columns, so a batch is one multi-row INSERT.
        "verdict": "quarantined" if quarantine else "accepted",
        "reason": quarantine,
        "processed_at": utcnow() if quarantine else None,
    }
    return Arrival(key, fields, started, unsynced, held)


def hold(
    raw_head: bytes, held: Held, envelope: Envelope, *, auth: dict[str, Any] | None = None
) -> Arrival:
    """The row of a message taken whole in memory, its bytes `held` to be committed with it
    (`commit_arrivals`); `raw_head` is its header block, or the whole message."""
    return arrive(
        raw_head,
        held.sha256,
        len(held.data),
        envelope,
        started=time.monotonic(),
        auth=auth,
        held=held.data,
    )


def accept_message(
    store: Store,
    raw: bytes,
    envelope: Envelope,
    *,
    quarantine: str = "",
    auth: dict[str, Any] | None = None,
    record: Recorder | None = None,
) -> Accepted:
    """Make `raw` durable and recorded; blocking (fsync), so call it from a thread.

    With `quarantine` the message is kept aside with that reason instead of being processed:
    the doors that cannot refuse (IMAP, folder) use it for senders their dossier does not allow.
    """
    started = time.monotonic()
    held = raw if len(raw) <= blob_rows.ROW_LIMIT else None
    digest = hashlib.sha256(raw).hexdigest() if held is not None else store.blobs.put(raw)
    arrival = arrive(
        raw,
        digest,
        len(raw),
        envelope,
        started=started,
        quarantine=quarantine,
        auth=auth,
        held=held,
    )
    try:
        with store.session.begin() as session:
            (message_id,) = _insert(session.connection(), [arrival])
            if record is not None:
                record(session, message_id)
    except IntegrityError:
        return _first(store, arrival.intake_key, record)
    _received(arrival)
    return Accepted(message_id, duplicate=False)


def adopt_spooled(
    store: Store,
    spooled: Spooled,
    envelope: Envelope,
    *,
    raw_head: bytes | None = None,
    auth: dict[str, Any] | None = None,
) -> Arrival:
    """Move a spooled (already fsync'd) message into the blob store and build its row.

    Blocking (rename), so call it from a thread. The blob's directory is synced by
    `commit_arrivals`, once for every arrival of a batch that landed there. Only the header
    block is read, and not even that when the caller has read it already (`raw_head`).
    """
    started = time.monotonic()
    head = read_head(spooled.path) if raw_head is None else raw_head
    directory = store.blobs.adopt(spooled.path, spooled.sha256, sync=False)
    return arrive(
        head,
        spooled.sha256,
        spooled.size,
        envelope,
        started=started,
        auth=auth,
        unsynced=directory,
    )


def accept_spooled(store: Store, spooled: Spooled, envelope: Envelope) -> Accepted:
    """`accept_message` for a message already on disk: the one-at-a-time form of intake."""
    return commit_arrivals(store, [adopt_spooled(store, spooled, envelope)])[0]


def commit_arrivals(
    store: Store, arrivals: list[Arrival], begin: Begin | None = None
) -> list[Accepted]:
    """Commit many arrivals' rows in one transaction; a row seen before answers as a duplicate.

    One commit (one fsync of the database log) for the whole batch is what makes concurrent
    sessions cheap, and so is one sync per blob directory the batch's files were renamed into,
    made before the commit: a committed row always names a durable blob, or holds its bytes.
    Transactions are begun by `begin` (a `KeptConnection`'s), else on a pooled connection.
    """
    for directory in {a.unsynced for a in arrivals if a.unsynced is not None}:
        fsync_dir(directory)
    return _commit_rows(store, arrivals, begin or store.engine.begin)


def _commit_rows(store: Store, arrivals: list[Arrival], begin: Begin) -> list[Accepted]:
    """Insert first and look keys up only when that fails: a row seen before (a client
    retrying after a lost 250) is rare, and looking every batch's keys up costs as much CPU
    as inserting them. Should another writer insert the same key between our look-up and
    commit, the batch is retried one row at a time, which sorts that out row by row."""
    try:
        return _commit_batch(begin, arrivals, look_up=False)
    except IntegrityError:
        pass
    try:
        return _commit_batch(begin, arrivals, look_up=True)
    except IntegrityError:
        if len(arrivals) == 1:
            return [_first(store, arrivals[0].intake_key, None)]
        return [_commit_rows(store, [arrival], begin)[0] for arrival in arrivals]


def _commit_batch(begin: Begin, arrivals: list[Arrival], *, look_up: bool) -> list[Accepted]:
    """One transaction on a plain connection with statements built once: under load this
    runs hundreds of times a second, and an ORM session adds as much CPU again. Without
    `look_up` every distinct key is taken for new, and a known one fails the transaction."""
    keys = [a.intake_key for a in arrivals]
    with begin() as connection:
        known: dict[str, int] = {}
        if look_up:
            rows = connection.execute(KNOWN_KEYS, {"keys": keys})
            known = {key: message_id for key, message_id in rows}
        fresh: dict[str, Arrival] = {}
        for arrival in arrivals:
            if arrival.intake_key not in known:
                fresh.setdefault(arrival.intake_key, arrival)
        inserted = _insert(connection, list(fresh.values()))
    ids = known | dict(zip(fresh, inserted, strict=True))
    results: list[Accepted] = []
    for arrival in arrivals:
        new = fresh.pop(arrival.intake_key, None) is arrival
        if new:
            _received(arrival)
        results.append(Accepted(ids[arrival.intake_key], duplicate=not new))
    return results


def _insert(connection: Connection, arrivals: list[Arrival]) -> list[int]:
    """Insert the rows of `arrivals` (distinct keys), each one's intake event and the bytes
    of those `held`; return the rows' ids in the order of `arrivals`.

    Plain multi-row INSERTs (one statement per table for the whole batch), not ORM objects:
    nothing here reads the rows back, and building and tracking objects cost more CPU than the
    group commit's transaction.
    """
    if not arrivals:
        return []
    fields = [arrival.fields for arrival in arrivals]
    by_key: dict[str, int] = {key: row for key, row in connection.execute(INSERT_MESSAGES, fields)}
    ids = [by_key[arrival.intake_key] for arrival in arrivals]
    rows = [_event(row, arrival.fields) for row, arrival in zip(ids, arrivals, strict=True)]
    connection.execute(INSERT_EVENTS, rows)
    held = [(a.fields["raw_sha256"], a.held) for a in arrivals if a.held is not None]
    blob_rows.insert(connection, held)
    return ids


def _event(message_id: int, fields: dict[str, Any]) -> dict[str, Any]:
    detail = {"size": fields["size"], "source": fields["source"]}
    if fields["verdict"] == "quarantined":
        detail["reason"] = fields["reason"]
        return {"kind": "message_quarantined", "message_id": message_id, "detail": detail}
    return {"kind": "message_accepted", "message_id": message_id, "detail": detail}


def _received(arrival: Arrival) -> None:
    """Count a message whose row has just been committed (not a duplicate)."""
    source = arrival.fields["source"]
    metrics.received(source, time.monotonic() - arrival.started)


def _first(store: Store, key: str, record: Recorder | None) -> Accepted:
    with store.session.begin() as session:
        first = session.scalars(select(Message.id).where(Message.intake_key == key)).first()
        if first is None:
            raise LookupError(f"intake key {key} collided but no message has it")
        if record is not None:
            record(session, first)
    return Accepted(first, duplicate=True)


def read_head(path: Path) -> bytes:
    """The header block of the message in `path` (up to the first empty line), bounded by
    HEAD_LIMIT; blocking, so call it from a thread."""
    with open(path, "rb") as fh:
        head = fh.read(HEAD_LIMIT)
    end = head.find(END_OF_HEAD)
    return head if end < 0 else head[: end + len(END_OF_HEAD)]
