"""Transactions on SQLite: their first write takes the lock with BEGIN IMMEDIATE, tried
every millisecond, instead of waiting in SQLite's busy handler."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import column, insert, select, table
from sqlalchemy.exc import OperationalError

from gateway.store.db import Store, open_store

T = table("t", column("x"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path}/w.db", tmp_path / "blobs", busy_timeout=2.0)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    yield store
    store.engine.dispose()


def _other(tmp_path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    """Another process's connection, beginning and committing only when told to."""
    return sqlite3.connect(
        tmp_path / "w.db", timeout=timeout, isolation_level=None, check_same_thread=False
    )


def _traced(store: Store) -> list[str]:
    """Every statement the store's connection starts, failed tries included."""
    statements: list[str] = []
    with store.session() as session:
        driver = session.connection().connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        driver.set_trace_callback(statements.append)
    return statements


def test_a_transaction_reads_unlocked_and_takes_the_lock_at_its_first_write(
    store: Store, tmp_path: Path
) -> None:
    statements = _traced(store)
    other = _other(tmp_path, timeout=0)
    with store.session.begin() as session:
        session.execute(select(T.c.x)).all()
        other.execute("INSERT INTO t VALUES (1)")  # the read held no lock
        session.execute(insert(T).values(x=2))
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            other.execute("INSERT INTO t VALUES (3)")
    assert [s for s in statements if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"]
    write = statements.index("INSERT INTO t (x) VALUES (2)")
    assert statements.index("BEGIN IMMEDIATE") < write
    assert statements.index("SELECT t.x \nFROM t") < statements.index("BEGIN IMMEDIATE")
    with store.session() as session:
        assert sorted(session.execute(select(T.c.x)).scalars()) == [1, 2]


def test_a_transaction_tries_for_the_lock_every_millisecond_until_it_is_free(
    store: Store, tmp_path: Path
) -> None:
    statements = _traced(store)
    other = _other(tmp_path)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.1, other.execute, args=("COMMIT",))
    release.start()
    with store.session.begin() as session:
        session.execute(insert(T).values(x=1))
    release.join()
    # SQLite's busy handler would have retried inside one statement, unseen by the trace.
    assert statements.count("BEGIN IMMEDIATE") >= 5
    with store.session() as session:
        timeout = session.connection().exec_driver_sql("PRAGMA busy_timeout").scalar()
    assert timeout == 2000


def test_a_transaction_gives_up_after_the_busy_timeout_with_sqlalchemys_error(
    tmp_path: Path,
) -> None:
    store = open_store(f"sqlite:///{tmp_path}/w.db", tmp_path / "blobs", busy_timeout=0.2)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    other = _other(tmp_path)
    other.execute("BEGIN IMMEDIATE")
    with (
        pytest.raises(OperationalError, match="database is locked"),
        store.session.begin() as session,
    ):
        session.execute(insert(T).values(x=1))
    other.execute("COMMIT")
    with store.session.begin() as session:
        session.execute(insert(T).values(x=2))
    with store.session() as session:
        assert list(session.execute(select(T.c.x)).scalars()) == [2]
    store.engine.dispose()
