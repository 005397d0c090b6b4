"""`stockade monitor`: phase 5, operations. Events from the gateway and monitors: list them,
follow them live, or emit one from a script or an external monitor.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Annotated

import typer

from stockade.cli.common import (
    OutputFormat,
    console,
    err_console,
    open_workspace,
    print_json,
    print_rows,
)
from stockade.core.errors import InvalidInput
from stockade.core.events import Event, list_events

app = typer.Typer(no_args_is_help=True)

COLUMNS = ["id", "at", "severity", "kind", "source", "subject", "payload"]


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"--since {value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise InvalidInput("--since needs a time zone, e.g. 2026-11-26T10:00:00Z")
    return moment


@app.command()
def events(
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    source: Annotated[str | None, typer.Option(help="Only from this source.")] = None,
    subject: Annotated[str | None, typer.Option(help="Only about this subject.")] = None,
    severity: Annotated[str | None, typer.Option(help="At least this severity.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 time with zone.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
) -> None:
    """List stored events, newest first."""
    ws = open_workspace()
    with ws.session() as session:
        found = list_events(
            session,
            kind=kind,
            source=source,
            subject=subject,
            min_severity=severity,
            since=_since(since),
            limit=limit,
        )
    print_rows([e.to_json() for e in found], COLUMNS, fmt, title="events")


@app.command()
def emit(
    kind: Annotated[str, typer.Argument(help="Event kind, e.g. drift.detected.")],
    source: Annotated[str, typer.Option(help="Who emits it.")] = "cli",
    subject: Annotated[str, typer.Option(help="What it is about, e.g. model:x@1.0.")] = "",
    severity: Annotated[str, typer.Option(help="debug, info, warning, error, critical.")] = "info",
    payload: Annotated[str, typer.Option(help="A JSON object.")] = "{}",
) -> None:
    """Record one event (for external monitors and scripts)."""
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--payload is not JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(data, dict):
        raise InvalidInput("--payload must be a JSON object")
    ws = open_workspace()
    with ws.session() as session:
        event = ws.events.publish(
            session, kind=kind, source=source, subject=subject, severity=severity, payload=data
        )
    console.print(f"event {event.id} recorded", markup=False)


@app.command()
def tail(
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between polls.")] = 1.0,
    count: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many events (default: Ctrl-C).")
    ] = None,
) -> None:
    """Follow new events as JSON lines until Ctrl-C (or --count events)."""
    ws = open_workspace()
    with ws.session() as session:
        newest = list_events(session, kind=kind, limit=1)
    last = newest[0].id if newest else 0
    err_console.print(f"following events after #{last} (Ctrl-C to stop)", markup=False)
    seen = 0
    while count is None or seen < count:
        with ws.session() as session:
            fresh: list[Event] = list_events(session, kind=kind, after_id=last, limit=1000)
        for event in reversed(fresh):
            print_json(event.to_json())
            last = event.id
            seen += 1
            if count is not None and seen >= count:
                return
        time.sleep(interval)
