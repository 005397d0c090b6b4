"""What every command group shares: the workspace, output in table or JSON form, errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from stockade.core import clock

if TYPE_CHECKING:
    from stockade.core.workspace import Workspace

__all__ = [
    "OutputFormat",
    "console",
    "err_console",
    "open_workspace",
    "print_json",
    "print_rows",
    "to_jsonable",
]

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

_workspace: Workspace | None = None


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


def open_workspace(*, require_migrated: bool = True) -> Workspace:
    """The process's workspace, opened on first use from the current settings."""
    global _workspace
    if _workspace is None:
        from stockade.core.workspace import Workspace

        _workspace = Workspace.open(require_migrated=require_migrated)
    elif require_migrated:
        _workspace.database.require_migrated()
    return _workspace


def close_workspace() -> None:
    global _workspace
    if _workspace is not None:
        _workspace.close()
        _workspace = None


def to_jsonable(value: Any) -> Any:
    """Datetimes as RFC 3339, bytes as hex, containers recursively."""
    if isinstance(value, datetime):
        return clock.format_time(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dict | list):
        return json.dumps(to_jsonable(value), ensure_ascii=False)
    return str(value)


def print_rows(
    rows: Iterable[dict[str, Any]],
    columns: Sequence[str],
    fmt: OutputFormat = OutputFormat.table,
    *,
    title: str | None = None,
) -> None:
    """A list of records as a Rich table (the given columns) or as a JSON array (all keys)."""
    rows = list(rows)
    if fmt is OutputFormat.json:
        print_json(rows)
        return
    table = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    console.print(table)
    if not rows:
        console.print("[dim](none)[/dim]")
