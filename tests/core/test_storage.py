"""Storage: migrations apply on both backends, match the tables, and bad URLs fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from stockade.core.db import Database
from stockade.core.errors import StorageUnavailable
from stockade.core.tables import Base


def test_migrations_reach_head_and_match_the_tables(database: Database) -> None:
    assert database.current_revision() == database.head_revision()
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent(database: Database) -> None:
    database.upgrade()
    assert database.current_revision() == database.head_revision()


def test_unmigrated_database_is_refused(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(StorageUnavailable, match="not initialised"):
        db.require_migrated()


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailable, match="does not exist"):
        Database(f"sqlite:///{tmp_path / 'nope' / 'x.db'}")


@pytest.mark.parametrize("url", ["not a url", "mysql+nodriver://x/y", "://"])
def test_bad_urls_are_clear_errors(url: str) -> None:
    with pytest.raises(StorageUnavailable):
        Database(url)


def test_unreachable_postgres_is_storage_unavailable() -> None:
    db = Database("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(StorageUnavailable, match=r"127\.0\.0\.1"):
        db.current_revision()
