"""Migration 0007 on a database with work in flight: raw bytes held for messages not yet
processed become blob rows (one per distinct content), readable by the rules stage, and a
downgrade gives them back to `held_raw` unless other blob rows would be lost."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from integration.servers import Postgres
from sqlalchemy import Engine, text

from gateway.store import db
from gateway.store.db import make_engine

pytestmark = pytest.mark.integration
RAW = b"Message-ID: <m@example.com>\r\nSubject: held\r\n\r\nbody\r\n"
DIGEST = hashlib.sha256(RAW).hexdigest()


def _config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    config.attributes["engine"] = engine
    return config


def _with_held_messages(engine: Engine) -> Config:
    """At revision 0006: two messages (two dossiers) with the same held bytes."""
    config = _config(engine)
    command.upgrade(config, "0006")
    with engine.begin() as connection:
        for n in (1, 2):
            connection.execute(
                text(
                    "INSERT INTO messages (id, source, intake_key, mail_from, recipients,"
                    " header_from, message_id, subject, raw_sha256, size, verdict, reason,"
                    " received_at, source_ref, routes, auth) VALUES (:id, 'smtp', :key, '',"
                    " '[]', '', '', '', :digest, :size, 'accepted', '', CURRENT_TIMESTAMP,"
                    " '', '[]', '{}')"
                ),
                {"id": n, "key": f"key-{n}", "digest": DIGEST, "size": len(RAW)},
            )
            connection.execute(
                text("INSERT INTO held_raw (message_id, data) VALUES (:id, :data)"),
                {"id": n, "data": RAW},
            )
    return config


def _rows(engine: Engine, table: str, key: str) -> dict[object, bytes]:
    with engine.connect() as connection:
        found = connection.execute(text(f"SELECT {key}, data FROM {table}"))
        return {k: bytes(data) for k, data in found}


def _check(engine: Engine) -> None:
    config = _with_held_messages(engine)
    command.upgrade(config, "0007")
    assert _rows(engine, "blobs", "sha256") == {DIGEST: RAW}
    command.downgrade(config, "0006")
    assert _rows(engine, "held_raw", "message_id") == {1: RAW, 2: RAW}
    command.upgrade(config, "0007")
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO blobs (sha256, data) VALUES (:digest, :data)"),
            {"digest": "ab" * 32, "data": b"a document's bytes"},
        )
    with pytest.raises(RuntimeError, match="1 blobs live only in the database"):
        command.downgrade(config, "0006")


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    yield engine
    engine.dispose()


def test_held_bytes_become_blob_rows_on_sqlite(sqlite_engine: Engine) -> None:
    _check(sqlite_engine)


def test_held_bytes_become_blob_rows_on_postgres(postgres: Postgres) -> None:
    engine = make_engine(postgres.create_database("blob_rows_migration"))
    try:
        _check(engine)
    finally:
        engine.dispose()
