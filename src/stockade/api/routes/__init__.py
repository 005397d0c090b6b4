"""The control plane's routers, one module per resource; each module exposes `router`.

Adding a resource is one line: its module name in `ROUTE_MODULES`.
"""

from __future__ import annotations

from datetime import datetime
from importlib import import_module
from typing import Annotated

from fastapi import APIRouter
from pydantic import PlainSerializer, WithJsonSchema

from stockade.core import clock

__all__ = ["API_PREFIX", "ROUTE_MODULES", "Timestamp", "routers"]

API_PREFIX = "/api/v1"

# Every timestamp the API returns reads like the audit log's: RFC 3339, microseconds, `Z`.
Timestamp = Annotated[
    datetime,
    PlainSerializer(clock.format_time, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]

ROUTE_MODULES: tuple[str, ...] = (
    "health",
    "tokens",
    "inventory",
    "audit",
    "events",
)


def routers() -> list[APIRouter]:
    """The `router` of every module in `ROUTE_MODULES`, in order."""
    found = []
    for name in ROUTE_MODULES:
        router = import_module(f"{__name__}.{name}").router
        if not isinstance(router, APIRouter):
            raise TypeError(f"{__name__}.{name}.router is not an APIRouter")
        found.append(router)
    return found
