"""Every route of the service is documented in docs/api.md (as "`METHOD /path`")."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.routing import APIRoute

from databuild.config import load_config
from databuild.service.app import create_app
from databuild.service.host import GraphHost

REPO = Path(__file__).resolve().parents[2]
DOCUMENTED_PREFIXES = ("/api/v1", "/healthz", "/readyz", "/metrics")


def _routes() -> list[str]:
    """From the OpenAPI document (every included router's routes are in it) and from the
    app's own top-level routes (in case one is left out of the document)."""
    app = create_app(GraphHost(load_config(REPO / "examples" / "calendar" / "databuild.toml", {})))
    found = {
        f"{method.upper()} {path}"
        for path, methods in app.openapi()["paths"].items()
        for method in methods
    }
    for route in app.routes:
        if isinstance(route, APIRoute):
            path = route.path.replace(":path}", "}")
            found.update(f"{method} {path}" for method in (route.methods or set()) - {"HEAD"})
    return sorted(r for r in found if r.split(" ", 1)[1].startswith(DOCUMENTED_PREFIXES))


def test_there_are_routes_to_check() -> None:
    assert "POST /api/v1/wants" in _routes()


@pytest.mark.parametrize("route", _routes())
def test_route_is_documented(route: str) -> None:
    assert f"`{route}`" in (REPO / "docs" / "api.md").read_text(), (
        f"{route} is not documented in docs/api.md"
    )
