"""The migrations create exactly what the models describe, on SQLite and PostgreSQL.

Alembic's own comparison finds any column, index or table the models have and the migrations
lack (or the other way round), so a model change without its migration fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from integration.servers import Postgres
from sqlalchemy import Engine

from gateway.store.db import make_engine, upgrade
from gateway.store.models import Base

pytestmark = pytest.mark.integration


def _differences(engine: Engine) -> list[object]:
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
