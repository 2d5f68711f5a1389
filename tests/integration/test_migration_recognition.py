"""The migrations create exactly what the models describe, on SQLite and PostgreSQL.

Alembic's own comparison finds any column, index or table the models have and the migrations
lack (or the other way round), so a model change without its migration fails here; the
recognition migration is also taken down and up again first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from integration.servers import Postgres
from sqlalchemy import Engine

from gateway.store import db
from gateway.store.db import make_engine, upgrade
from gateway.store.models import Base

pytestmark = pytest.mark.integration


def _differences(engine: Engine) -> list[object]:
    """Up to head, down past the recognition migration and up again, then compare."""
    upgrade(engine)
    config = Config()
    config.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    config.attributes["engine"] = engine
    command.downgrade(config, "0001")
    upgrade(engine)
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


def test_models_match_migrations_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    try:
        assert _differences(engine) == []
    finally:
        engine.dispose()


def test_models_match_migrations_on_postgres(postgres: Postgres) -> None:
    engine = make_engine(postgres.create_database("recognition_schema"))
    try:
        assert _differences(engine) == []
    finally:
        engine.dispose()
