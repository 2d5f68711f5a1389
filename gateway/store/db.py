"""Engine, sessions and the schema version check.

SQLite runs in WAL mode with `synchronous=FULL`: a commit that returned is on disk, which is
what lets the SMTP door answer 250 right after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from gateway.store.blobs import BlobStore

if TYPE_CHECKING:
    from alembic.config import Config


class SchemaOutdated(Exception):
    """The database is behind the code's migrations."""


def make_engine(url: str, busy_timeout: float = 5.0) -> Engine:
    if url.startswith("sqlite"):
        _make_sqlite_parent(url)
        engine = create_engine(url, connect_args={"timeout": busy_timeout})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


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
