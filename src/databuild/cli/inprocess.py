"""The build API in process: ``databuild build`` talking to the embedded service it started.

The command and its embedded service share one process, so the command calls the
service's operations on the service's event loop instead of going through HTTP (which
would need the FastAPI app, ~0.2 s to import, before the first job could start). The
answers are the same JSON documents the HTTP API returns, from the same operations. Jobs
still reach the service over HTTP, as the job protocol says. Imported only on that path.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from databuild.core.errors import InvalidInput
from databuild.service import operations, schemas
from databuild.service.server import EmbeddedService

WAIT_SECONDS = 10.0


class InProcessBuildApi:
    def __init__(self, service: EmbeddedService) -> None:
        self.service = service
        self.host = service.host

    def last_sequence(self) -> int:
        async def last() -> int:  # what /healthz reports, without counting the state
            return operations.controller_of(self.host).last_committed

        return self.service.call(last)

    def create_wants(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            request = schemas.CreateWantsRequest.model_validate(body)
        except ValidationError as exc:
            raise InvalidInput(f"bad want request: {exc}") from None
        created = self.service.call(lambda: operations.create_wants(self.host, request))
        return created.model_dump(mode="json")

    def events(self, after: int) -> dict[str, Any]:
        return self.service.call(
            lambda: operations.event_documents(
                self.host, after=after, limit=1000, wait=WAIT_SECONDS
            )
        )

    def want(self, want_id: str) -> dict[str, Any]:
        async def one() -> schemas.WantView:
            return operations.want(self.host, want_id)

        return self.service.call(one).model_dump(mode="json")
