"""The FastAPI application: routers, error mapping, health, and the host's lifespan.

``create_app`` is called by the server runner (``databuild serve``, the embedded service
of ``databuild build``) and by tests. Every DataBuildError becomes a 4xx (or 503 when the
service itself cannot work) with ``{"error": "..."}``; request validation errors become a
422 whose message names the field; a handler that runs out of file descriptors or memory
(an OSError) gets 503 with ``Retry-After``. Nothing here decides or stores anything.
"""

from __future__ import annotations

import errno
import logging
import resource
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from databuild import __version__
from databuild.core.errors import (
    DataBuildError,
    IllegalTransition,
    InvalidInput,
    NotFound,
    ServiceError,
    StorageError,
)
from databuild.service import openapi, operations, schemas
from databuild.service.admin_routes import router as admin_router
from databuild.service.api import router
from databuild.service.dashboard import mount as mount_dashboard
from databuild.service.host import GraphHost
from databuild.service.metrics import router as metrics_router
from databuild.service.security import AccessPolicy, SecurityMiddleware
from databuild.service.sla_routes import router as sla_router

log = logging.getLogger("databuild.service")

# errno -> what the service ran out of, for a 503 (``nofile``: its ulimit -n).
_EXHAUSTED = {
    errno.EMFILE: "out of file descriptors (ulimit -n {nofile})",
    errno.ENFILE: "out of file descriptors (the system's file table is full)",
    errno.ENOMEM: "out of memory",
}


def _status_of(exc: DataBuildError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, InvalidInput):
        return 422
    if isinstance(exc, IllegalTransition):
        return 409
    if isinstance(exc, StorageError | ServiceError):
        return 503
    return 400


def _field(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "request"


def create_app(
    host: GraphHost, policy: AccessPolicy | None = None, *, manage_host: bool = True
) -> FastAPI:
    """``manage_host``: start and stop the host with the app (tests); the server runner
    starts it itself first, so that a start-up error is a clear message, not a traceback."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not manage_host:
            yield
            return
        await host.start()
        try:
            yield
        finally:
            await host.stop()

    app = FastAPI(
        title="DataBuild",
        version=__version__,
        description="The graph service API: wants, partitions, job runs, events.",
        lifespan=lifespan,
    )
    app.state.host = host
    generated = app.openapi

    def completed_openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi.complete(generated())
        return app.openapi_schema

    app.openapi = completed_openapi  # type: ignore[method-assign]
    app.include_router(router)
    app.include_router(sla_router)
    app.include_router(metrics_router)
    app.include_router(admin_router)
    mount_dashboard(app)

    @app.exception_handler(DataBuildError)
    async def databuild_error(request: Request, exc: DataBuildError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=_status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            if error.get("type") == "json_invalid":
                reason = (error.get("ctx") or {}).get("error", "")
                problems.append(f"the request body is not valid JSON: {reason}".rstrip(": "))
                continue
            loc = tuple(error.get("loc", ()))
            problems.append(f"{_field(loc)}: {error.get('msg', 'invalid')}")
        return JSONResponse({"error": "; ".join(problems) or "invalid request"}, status_code=422)

    @app.exception_handler(OSError)
    async def os_error(request: Request, exc: OSError) -> JSONResponse:
        """Out of file descriptors or memory is the service's state, not the request's
        fault: 503, try again later. Any other OSError is a bug to log."""
        if exc.errno in _EXHAUSTED:
            nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            return JSONResponse(
                {
                    "error": f"the service is {_EXHAUSTED[exc.errno].format(nofile=nofile)}: "
                    f"{exc.strerror}; try again later"
                },
                status_code=503,
                headers={"Retry-After": "1"},
            )
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": f"internal error: {exc}"}, status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    async def healthz() -> JSONResponse:
        """Liveness: 200 while the process works (also while it replays its log, with
        ``"status": "starting"``), 503 once the controller has stopped (the process exits)."""
        body = operations.health(host)
        return JSONResponse(body.model_dump(), status_code=503 if body.status == "failed" else 200)

    async def readyz() -> JSONResponse:
        """Readiness, with the role: 200 once the log is replayed, storage is reachable and
        this is a working leader, or a standby that follows the log and knows the leader's
        URL; 503 with the reason otherwise (send no traffic here yet)."""
        body = await operations.readiness(host)
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

    for method in ("GET", "HEAD"):  # probes (and load balancers) send either
        app.add_api_route(
            "/healthz",
            healthz,
            methods=[method],
            operation_id=f"healthz_{method.lower()}",
            response_model=schemas.Health,
            responses={503: {"model": schemas.Health, "description": "The controller stopped"}},
        )
        app.add_api_route(
            "/readyz",
            readyz,
            methods=[method],
            operation_id=f"readyz_{method.lower()}",
            response_model=schemas.Readiness,
            responses={503: {"model": schemas.Readiness, "description": "Not ready (why)"}},
        )

    if policy is not None:
        app.add_middleware(SecurityMiddleware, policy=policy)
    return app
