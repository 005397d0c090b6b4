"""Shared fixtures: an isolated STOCKADE_HOME, and databases on SQLite and PostgreSQL.

PostgreSQL and Redis tests use real servers (STOCKADE_TEST_POSTGRES_URL,
STOCKADE_TEST_REDIS_URL). Without them those tests skip with a reason locally; with
CI=true a missing service stops the run with an error instead.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from stockade.cli.main import app
from stockade.core.config import get_settings
from stockade.core.db import Database

POSTGRES_URL = os.environ.get(
    "STOCKADE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("STOCKADE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _postgres_problem() -> str | None:
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRES_URL).set(drivername="postgresql")
    try:
        with psycopg.connect(url.render_as_string(hide_password=False), connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL unavailable at {make_url(POSTGRES_URL)!r}: {str(exc).strip()}"


def _redis_problem() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
        return None
    except redis.RedisError as exc:
        return f"Redis unavailable at {REDIS_URL}: {exc}"


_problems: dict[str, str | None] = {}


def service_problem(name: str) -> str | None:
    if name not in _problems:
        _problems[name] = _postgres_problem() if name == "postgres" else _redis_problem()
    return _problems[name]


def pytest_sessionstart(session: pytest.Session) -> None:
    if IN_CI:
        missing = [p for p in (service_problem("postgres"), service_problem("redis")) if p]
        if missing:
            pytest.exit("CI requires its services: " + "; ".join(missing), returncode=3)


def require_service(name: str) -> None:
    problem = service_problem(name)
    if problem:
        pytest.skip(problem)


@pytest.fixture(autouse=True)
def stockade_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own STOCKADE_HOME and a fresh settings cache."""
    home = tmp_path / "home"
    monkeypatch.setenv("STOCKADE_HOME", str(home))
    monkeypatch.delenv("STOCKADE_DATABASE_URL", raising=False)
    monkeypatch.delenv("STOCKADE_REDIS_URL", raising=False)
    monkeypatch.delenv("STOCKADE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL to a fresh, empty schema in the test PostgreSQL database, dropped afterwards."""
    require_service("postgres")
    import psycopg
    from sqlalchemy.engine import make_url

    schema = f"t_{uuid.uuid4().hex[:16]}"
    plain = make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def redis_url() -> str:
    require_service("redis")
    return REDIS_URL


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def db_url(request: pytest.FixtureRequest, stockade_home: Path) -> str:
    """The same test on the embedded SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        stockade_home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{stockade_home / 'stockade.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def database(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    """A migrated database; STOCKADE_DATABASE_URL points at it for CLI and API tests."""
    monkeypatch.setenv("STOCKADE_DATABASE_URL", db_url)
    get_settings.cache_clear()
    db = Database(db_url)
    db.upgrade()
    yield db
    db.dispose()


@dataclass(frozen=True)
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def cli() -> Callable[..., Run]:
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Run:
        result = runner.invoke(app, list(args), input=input, catch_exceptions=False)
        return Run(result.exit_code, result.stdout, result.stderr)

    return invoke
