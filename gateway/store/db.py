"""Engine, sessions and the schema version check.

SQLite runs in WAL mode with `synchronous=FULL`: a commit that returned is on disk, which is
what lets the SMTP door answer 250 right after it.

A writer that finds SQLite's write lock taken waits in SQLite's busy handler, which sleeps
1, 2, 5, 10 … up to 100 ms between tries; while other processes commit many times a second
it wakes to a lock taken again and waits longer each time, and a lock free for a millisecond
between their commits goes by unused. A transaction therefore takes the lock itself at its
first write (`BEGIN IMMEDIATE`, where Python's sqlite3 would have begun one for that write),
trying again every millisecond until the busy timeout; what it reads before that it reads
without the lock, as before.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from gateway.store.blobs import BlobStore

if TYPE_CHECKING:
    from alembic.config import Config


# Between two tries at SQLite's write lock.
LOCK_POLL = 0.001


class SchemaOutdated(Exception):
    """The database is behind the code's migrations."""


def make_engine(url: str, busy_timeout: float = 5.0) -> Engine:
    if url.startswith("sqlite"):
        _make_sqlite_parent(url)
        engine = create_engine(url, connect_args={"timeout": busy_timeout})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "before_cursor_execute", _write_lock_taker(busy_timeout))
        return engine
    return create_engine(url, pool_pre_ping=True)


def _write_lock_taker(busy_timeout: float) -> Callable[..., None]:
    """A `before_cursor_execute` hook: where the driver would begin a transaction for a write
    (Python's sqlite3 does at the first INSERT, UPDATE or DELETE unless in autocommit), begin
    it ourselves."""

    def before(
        conn: Connection, _cursor: Any, _sql: str, _params: Any, context: Any, _many: bool
    ) -> None:
        if context is None or not context.is_crud:
            return
        driver = conn.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        if driver.isolation_level is not None and not driver.in_transaction:
            _take_write_lock(conn, driver, busy_timeout)

    return before


def _take_write_lock(conn: Connection, driver: sqlite3.Connection, busy_timeout: float) -> None:
    """`BEGIN IMMEDIATE`, tried every `LOCK_POLL` until `busy_timeout` has passed.

    The tries go to the driver's connection straight, as there may be hundreds of them; the
    last one, or one that fails for another reason than the lock, goes through SQLAlchemy so
    that its error is the one callers expect.
    """
    deadline = time.monotonic() + busy_timeout
    driver.execute("PRAGMA busy_timeout = 0")
    try:
        while time.monotonic() < deadline:
            try:
                driver.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                    break
            time.sleep(LOCK_POLL)
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    finally:
        driver.execute(f"PRAGMA busy_timeout = {round(busy_timeout * 1000)}")


def _make_sqlite_parent(url: str) -> None:
    path = url.split(":///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


@dataclass(frozen=True)
class Store:
    """The database and the blobs (rows in it, and files), handed together to every runner."""

    engine: Engine
    session: sessionmaker[Session]
    blobs: BlobStore


def open_store(url: str, blob_dir: Path, busy_timeout: float = 5.0) -> Store:
    engine = make_engine(url, busy_timeout)
    sessions = sessionmaker(engine, expire_on_commit=False)
    return Store(engine, sessions, BlobStore(blob_dir, engine))


def _alembic_config(engine: Engine) -> Config:
    # Alembic is loaded here, when the schema is migrated or checked, not with the store:
    # SMTP listener processes open the store many times over and never need it.
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration."""
    from alembic import command

    command.upgrade(_alembic_config(engine), "head")


def check_current(engine: Engine) -> None:
    """Refuse to run on a schema older (or newer) than this code's migrations."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current != head:
        raise SchemaOutdated(
            f"database schema is at {current or 'nothing'}, this gateway needs {head}: "
            "run `gateway db upgrade` first"
        )
