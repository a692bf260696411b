"""The dashboard: server-rendered pages at ``/`` over the same state the API reads.

Jinja2 templates (autoescaped) render each page; a vendored htmx (static/htmx.min.js, with
its license) swaps a page's live parts when ``static/dashboard.js``, following
``/api/v1/events/stream``, says something changed. Writes (create, cancel) go from that
script to ``/api/v1`` and so pass the API's Host/Origin/token checks. Every response gets
a strict Content-Security-Policy (no inline script), ``nosniff`` and ``frame-ancestors
'none'``. ``mount`` is the one call ``create_app`` makes.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from databuild.service.dashboard.routes import STATIC_DIR, SecurityHeaders, router


def mount(app: FastAPI) -> None:
    """Add the pages, the static files and the security headers to the app."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
    app.add_middleware(SecurityHeaders)
