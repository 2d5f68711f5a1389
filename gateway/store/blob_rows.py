"""Blobs small enough to live in the database: a row each in `blobs`, named by sha256 as a blob
file is, and written in the transaction that commits the rows naming them.

Most mail and most documents are a few kilobytes. As files, each costs a create, a write, an
fsync, a rename and a directory fsync, and on a busy file system the create alone can cost more
than the bytes; as rows, a whole batch is made durable by the one commit its transaction makes
anyway, and a crash can leave no file behind that no row names. Several instances sharing a
PostgreSQL database see them without a shared file system. Blobs past `ROW_LIMIT` stay files
(`gateway.store.blobs`): a database is no place to stream megabytes through.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import cast

from sqlalchemy import Connection, Table, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from gateway.store.models import BlobRow

# The largest blob kept as a row: what an SMTP session holds in memory before it streams to a
# spool file (`gateway.intake.spool.FLUSH_SIZE` is this), so mail that never needed a file gets
# none.
ROW_LIMIT = 1024 * 1024

_BLOBS = cast(Table, BlobRow.__table__)
# The same bytes may come again (a message for two dossiers, one attachment in many mails):
# a row already there is kept, as a blob file already there is.
_INSERT: dict[str, Insert] = {
    "sqlite": sqlite.insert(_BLOBS).on_conflict_do_nothing(),
    "postgresql": postgresql.insert(_BLOBS).on_conflict_do_nothing(),
}
_FETCH = select(_BLOBS.c.sha256, _BLOBS.c.data).where(
    _BLOBS.c.sha256.in_(bindparam("digests", expanding=True))
)


def insert(connection: Connection, blobs: Iterable[tuple[str, bytes]]) -> None:
    """Add `(sha256, bytes)` blobs in the connection's transaction; durable with its commit."""
    rows = [{"sha256": digest, "data": data} for digest, data in dict(blobs).items()]
    if rows:
        connection.execute(_INSERT[connection.dialect.name], rows)


def fetch(connection: Connection, digests: Collection[str]) -> dict[str, bytes]:
    """The bytes of those of `digests` that are rows (the others are files, or nowhere)."""
    if not digests:
        return {}
    rows = connection.execute(_FETCH, {"digests": list(digests)})
    return {digest: bytes(data) for digest, data in rows}
