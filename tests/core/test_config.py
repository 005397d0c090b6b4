"""Settings: defaults, `./stockade.toml`, `STOCKADE_CONFIG`, `STOCKADE_*` over the file, explicit
arguments over all; PostgreSQL by URL; and bad configuration as one clear CLI error line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from stockade.cli.main import app
from stockade.core.config import Settings, config_file, get_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No STOCKADE_* setting leaks in from the shell running the tests (home stays isolated)."""
    for name in Settings.model_fields:
        if name != "home":
            monkeypatch.delenv(f"STOCKADE_{name.upper()}", raising=False)
    get_settings.cache_clear()


def write(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STOCKADE_HOME")
    monkeypatch.setenv("USER", "alice")
    settings = get_settings()
    assert settings.home == tmp_path / ".stockade"
    assert settings.home.is_absolute()
    assert settings.database_url is None
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / '.stockade' / 'stockade.db'}"
    assert settings.redis_url is None
    assert settings.events_stream == "stockade:events"
    assert (settings.host, settings.port) == ("127.0.0.1", 8700)
    assert settings.audit_origin == "stockade.local/audit"
    assert settings.audit_checkpoint_interval == 60.0
    assert settings.actor is None
    assert settings.cli_actor == "cli:alice"
    assert settings.keys_dir == tmp_path / ".stockade" / "keys"
    assert settings.admin_token_file == tmp_path / ".stockade" / "admin.token"
    assert config_file() == Path("stockade.toml")


def test_stockade_toml_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STOCKADE_HOME")
    write(
        tmp_path / "stockade.toml",
        'home = "state"\n'
        "port = 9001\n"
        'host = "0.0.0.0"\n'
        'database_url = "sqlite:////srv/stockade.db"\n'
        'audit_origin = "example.com/audit"\n'
        "audit_checkpoint_interval = 0\n"
        'actor = "ci:pipeline"\n'
        'unknown_key = "ignored"\n',
    )
    settings = get_settings()
    assert settings.home == tmp_path / "state"
    assert (settings.host, settings.port) == ("0.0.0.0", 9001)
    assert settings.resolved_database_url == "sqlite:////srv/stockade.db"
    assert settings.audit_origin == "example.com/audit"
    assert settings.audit_checkpoint_interval == 0
    assert settings.cli_actor == "ci:pipeline"


def test_stockade_config_points_at_another_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "stockade.toml", "port = 9001\nhost = 'from-cwd'\n")
    other = write(tmp_path / "etc" / "prod.toml", "port = 9555\n")
    monkeypatch.setenv("STOCKADE_CONFIG", str(other))
    assert config_file() == other
    settings = get_settings()
    assert settings.port == 9555
    assert settings.host == "127.0.0.1"  # ./stockade.toml is not read then


def test_environment_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path / "stockade.toml", "port = 9001\nhost = 'file-host'\naudit_origin = 'file/log'\n"
    )
    monkeypatch.setenv("STOCKADE_PORT", "9100")
    monkeypatch.setenv("STOCKADE_AUDIT_ORIGIN", "env/log")
    settings = get_settings()
    assert settings.port == 9100
    assert settings.audit_origin == "env/log"
    assert settings.host == "file-host"  # what the environment does not set still comes from it


def test_explicit_arguments_win_over_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "stockade.toml", "port = 9001\n")
    monkeypatch.setenv("STOCKADE_PORT", "9100")
    assert Settings(port=9200).port == 9200
    assert get_settings(port=9300).port == 9300


def test_settings_are_cached_until_cleared(tmp_path: Path) -> None:
    config = write(tmp_path / "stockade.toml", "port = 9001\n")
    assert get_settings().port == 9001
    config.write_text("port = 9002\n", encoding="utf-8")
    assert get_settings().port == 9001
    assert get_settings() is get_settings()
    get_settings.cache_clear()
    assert get_settings().port == 9002


@pytest.mark.parametrize("source", ["environment", "stockade.toml"])
def test_a_postgresql_url_moves_the_workspace_to_postgresql(
    postgres_url: str,
    stockade_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
) -> None:
    if source == "environment":
        monkeypatch.setenv("STOCKADE_DATABASE_URL", postgres_url)
    else:
        write(tmp_path / "stockade.toml", f"database_url = {postgres_url!r}\n")
    get_settings.cache_clear()
    assert get_settings().resolved_database_url == postgres_url

    runner = CliRunner()
    upgraded = runner.invoke(app, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.stdout + upgraded.stderr
    created = runner.invoke(app, ["inventory", "create", "system", "x", "--owner", "ops"])
    assert created.exit_code == 0, created.stdout + created.stderr

    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            systems = conn.execute(text("SELECT name, owner FROM ai_systems")).all()
            audited = conn.execute(text("SELECT action, subject FROM audit_entries")).all()
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
    finally:
        engine.dispose()
    assert [tuple(row) for row in systems] == [("x", "ops")]
    assert ("system.create", "system:x") in [tuple(row) for row in audited]
    assert schema.startswith("t_")  # the test's own schema, from the URL's search_path
    assert not (stockade_home / "stockade.db").exists()  # no SQLite file on the side

    listed = runner.invoke(app, ["inventory", "list", "systems", "-f", "json"])
    assert listed.exit_code == 0, listed.stderr
    assert '"name": "x"' in listed.stdout


# -- bad configuration ------------------------------------------------------------------


def _one_line_error(args: list[str], *fragments: str) -> str:
    result = CliRunner().invoke(app, args)
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 2, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("content", "setting"),
    [
        ('port = "abc"\n', "port"),
        ("port = 70000\n", "port"),
        ("audit_checkpoint_interval = -5\n", "audit_checkpoint_interval"),
        ('events_stream = ""\n', "events_stream"),
        ("host = [1, 2]\n", "host"),
    ],
    ids=["port-text", "port-range", "negative-interval", "empty-stream", "host-list"],
)
def test_an_invalid_value_in_the_toml_is_one_line_and_exit_2(
    tmp_path: Path, content: str, setting: str
) -> None:
    write(tmp_path / "stockade.toml", content)
    _one_line_error(["inventory", "list", "models"], setting)


@pytest.mark.parametrize(
    "content",
    ["port = \n", "[section\n", 'port = "unterminated\n', "port = 1\nport = 2\n", "\x00"],
    ids=["no-value", "open-table", "open-string", "duplicate-key", "nul"],
)
def test_a_malformed_toml_file_is_one_line_and_exit_2(tmp_path: Path, content: str) -> None:
    write(tmp_path / "stockade.toml", content)
    _one_line_error(["inventory", "list", "models"], "stockade.toml")


def test_a_malformed_file_named_by_stockade_config_is_named_in_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path / "etc" / "broken.toml", "[x\n")
    monkeypatch.setenv("STOCKADE_CONFIG", str(config))
    _one_line_error(["db", "upgrade"], "broken.toml")


def test_an_invalid_environment_value_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STOCKADE_PORT", "abc")
    _one_line_error(["inventory", "list", "models"], "port")
