"""Administrative routes of ``/api/v1``: ``POST /api/v1/reload`` (reload databuild.toml).

A write like any other: the security middleware checks its token, Host and Origin before
it gets here. The handler calls ``reloading.reload_config`` and returns what changed; a
refused configuration is a ConfigError, which the app turns into a 422 naming the file and
key. Nothing is decided here.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from databuild.service import schemas
from databuild.service.host import GraphHost
from databuild.service.reloading import reload_config

router = APIRouter(prefix="/api/v1")

_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": schemas.ErrorResponse, "description": "the new configuration is refused"},
    503: {"model": schemas.ErrorResponse, "description": "a read-only view cannot reload"},
}


class ReloadResponse(BaseModel):
    config_path: str
    config_digest: str  # sha256 of the databuild.toml now running
    previous_digest: str
    jobs_added: list[str]
    jobs_changed: list[str]
    jobs_removed: list[str]
    schedules_changed: bool
    wants_retried: list[str]  # root wants reopened: they had failed as unbuildable
    summary: str


@router.post("/reload", response_model=ReloadResponse, responses=_ERRORS)
async def reload(request: Request) -> ReloadResponse:
    """Reload databuild.toml: validated first; a bad file is refused (422) and the service
    keeps its configuration. New and changed jobs apply to new runs; runs in flight finish;
    wants that failed only because no job built their partition are retried."""
    host: GraphHost = request.app.state.host
    result = await reload_config(host)
    return ReloadResponse(
        config_path=result.config_path,
        config_digest=result.config_digest,
        previous_digest=result.previous_digest,
        jobs_added=list(result.jobs_added),
        jobs_changed=list(result.jobs_changed),
        jobs_removed=list(result.jobs_removed),
        schedules_changed=result.schedules_changed,
        wants_retried=list(result.wants_retried),
        summary=result.summary,
    )
