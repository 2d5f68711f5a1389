"""Alembic migrations on both databases the gateway supports, from empty to head."""

from __future__ import annotations

from pathlib import Path

import pytest
from integration.servers import Postgres
from sqlalchemy import Engine, inspect, text

from gateway.store.db import SchemaOutdated, check_current, make_engine, upgrade

pytestmark = pytest.mark.integration

TABLES = {
    "integrations",
    "dossiers",
    "addresses",
    "allowed_senders",
    "messages",
    "documents",
    "deliveries",
    "events",
}


def _migrate_and_check(engine: Engine) -> None:
    """An empty database is refused, an upgraded one is accepted and has every table."""
    with pytest.raises(SchemaOutdated):
        check_current(engine)
    upgrade(engine)
    check_current(engine)
    missing = TABLES - set(inspect(engine).get_table_names())
    assert not missing, f"tables not created by the migrations: {sorted(missing)}"


def test_migrations_on_postgres(postgres: Postgres) -> None:
    engine = make_engine(postgres.create_database("migrations"))
    try:
        _migrate_and_check(engine)
        upgrade(engine)  # a second upgrade is a no-op, as on every daemon start
        check_current(engine)
    finally:
        engine.dispose()


def test_migrations_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'gateway.db'}")
    try:
        _migrate_and_check(engine)
    finally:
        engine.dispose()


def test_sqlite_is_wal_with_full_sync(tmp_path: Path) -> None:
    """WAL + synchronous=FULL is what makes a returned commit durable before SMTP says 250."""
    engine = make_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
            assert conn.execute(text("PRAGMA synchronous")).scalar_one() == 2
    finally:
        engine.dispose()
