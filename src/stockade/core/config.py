"""One configuration object for the whole process.

Values come, highest first, from explicit arguments, `STOCKADE_*` environment variables,
a `stockade.toml` file, and the defaults below.
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from stockade.core.errors import ConfigError

__all__ = ["Settings", "config_file", "get_settings"]


def config_file() -> Path:
    """The TOML file consulted: `STOCKADE_CONFIG`, else `./stockade.toml`."""
    return Path(os.environ.get("STOCKADE_CONFIG", "stockade.toml"))


class Settings(BaseSettings):
    """Settings for the control plane, the CLI and every phase."""

    model_config = SettingsConfigDict(env_prefix="STOCKADE_", extra="ignore")

    home: Path = Field(default=Path(".stockade"), description="State directory.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; defaults to an SQLite file under `home`.",
    )
    redis_url: str | None = Field(default=None, description="Redis for cross-replica events.")
    events_stream: str = Field(
        default="stockade:events", min_length=1, description="Redis stream events fan out on."
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=1, le=65535)
    audit_origin: str = Field(
        default="stockade.local/audit",
        description="Origin line of signed audit checkpoints.",
    )
    audit_checkpoint_interval: float = Field(
        default=60.0,
        ge=0,
        description="Seconds between automatic checkpoints while `stockade up` runs; 0 disables.",
    )
    actor: str | None = Field(default=None, description="Who the CLI records as the actor.")

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'stockade.db'}"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def admin_token_file(self) -> Path:
        return self.home / "admin.token"

    @property
    def cli_actor(self) -> str:
        if self.actor:
            return self.actor
        user = os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"
        return f"cli:{user}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=config_file()),
        )


@lru_cache(maxsize=1)
def get_settings(**overrides: Any) -> Settings:
    """The process-wide settings (cached; tests call `get_settings.cache_clear()`).

    A missing, malformed or invalid configuration is a `ConfigError` naming the file and
    the setting, never a traceback.
    """
    path = config_file()
    if "STOCKADE_CONFIG" in os.environ and not path.is_file():
        raise ConfigError(f"STOCKADE_CONFIG names {path}, which is not a readable file")
    try:
        return Settings(**overrides)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(
            f"invalid configuration ({path} or STOCKADE_* variables): {problems}"
        ) from None
