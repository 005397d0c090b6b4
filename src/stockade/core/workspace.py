"""A workspace is one Stockade home: its settings, database, key store, audit log and events.

The CLI, the REST API and every phase open one and go through it, so there is one way to
reach each service.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.orm import Session

from stockade.core.audit import AuditLog
from stockade.core.config import Settings, get_settings
from stockade.core.db import Database
from stockade.core.events import EventPublisher
from stockade.core.keys import KeyStore

__all__ = ["Workspace"]


@dataclass
class Workspace:
    settings: Settings
    database: Database
    keys: KeyStore
    audit: AuditLog
    events: EventPublisher

    @classmethod
    def open(cls, settings: Settings | None = None, *, require_migrated: bool = True) -> Workspace:
        """Open the workspace; by default refuse a database that is not migrated."""
        settings = settings or get_settings()
        database = Database(settings.resolved_database_url)
        if require_migrated:
            database.require_migrated()
        keys = KeyStore(settings.keys_dir)
        return cls(
            settings=settings,
            database=database,
            keys=keys,
            audit=AuditLog(keys, origin=settings.audit_origin),
            events=EventPublisher(settings.redis_url, stream=settings.events_stream),
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction; inventory changes and their audit entries commit together."""
        with self.database.session() as session:
            yield session

    def close(self) -> None:
        self.events.close()
        self.database.dispose()
