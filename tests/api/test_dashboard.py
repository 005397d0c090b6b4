"""The dashboard is served beside the API and renders stored values only as text."""

from __future__ import annotations

from stockade.api.app import create_app
from stockade.core.db import Database
from stockade.web import STATIC_DIR


def test_dashboard_is_served_and_root_redirects_to_it(database: Database) -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app()) as client:
        root = client.get("/", follow_redirects=False)
        assert root.status_code == 307
        assert root.headers["location"] == "/dashboard/"
        page = client.get("/dashboard/")
        assert page.status_code == 200
        assert "<title>Stockade control plane</title>" in page.text
        script = client.get("/dashboard/app.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert client.get("/dashboard/style.css").status_code == 200


def test_dashboard_never_renders_values_as_markup() -> None:
    # Inventory names, descriptions and audit details are user input: the page must place
    # them with textContent / text nodes, never as HTML.
    script = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
