"""The control-plane REST API (FastAPI): `create_app()` builds it; routers live in `routes/`."""

from __future__ import annotations

from stockade.api.app import create_app

__all__ = ["create_app"]
