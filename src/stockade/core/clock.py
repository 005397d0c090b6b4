"""The one clock: every timestamp Stockade records comes from here, so tests can freeze it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

__all__ = ["format_time", "frozen", "now"]

_source: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def now() -> datetime:
    """Current time, timezone-aware UTC."""
    return _source()


def format_time(moment: datetime) -> str:
    """RFC 3339 with microseconds and a `Z` suffix, the form written into audit entries."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@contextmanager
def frozen(moment: datetime) -> Iterator[None]:
    """Freeze `now()` at `moment` for the duration of the block."""
    global _source
    previous = _source
    _source = lambda: moment  # noqa: E731
    try:
        yield
    finally:
        _source = previous
