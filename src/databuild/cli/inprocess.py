"""The build API in process: ``databuild build`` talking to the embedded service it started.

The command and its embedded service share one process, so the command calls the
service's operations on the service's event loop instead of going through HTTP (which
would need the FastAPI app, ~0.2 s to import, before the first job could start). The
answers are the same JSON documents the HTTP API returns, from the same operations. Jobs
still reach the service over HTTP, as the job protocol says. Imported only on that path.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import ValidationError

from databuild.codec import event_to_dict
from databuild.core.errors import InvalidInput
from databuild.core.events import Event, WantCanceled, WantExpired, WantFailed, WantSatisfied
from databuild.service import operations, schemas
from databuild.service.server import EmbeddedService

WAIT_SECONDS = 10.0
PAGE_LIMIT = 1000
# How long a page waits for more events once it has some, unless a want the build asked
# for has ended: the command then wakes a few times a second instead of once per commit
# (each wake-up takes the interpreter's lock from the service's loop), and its progress
# line, redrawn 8 times a second, is no later for it.
LINGER_SECONDS = 0.1
_ENDED = (WantSatisfied, WantFailed, WantExpired, WantCanceled)


class InProcessBuildApi:
    def __init__(self, service: EmbeddedService) -> None:
        self.service = service
        self.host = service.host
        self._asked: set[str] = set()  # the wants this build created or found

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
        self._asked.update(want.want_id for want in created.wants)
        return created.model_dump(mode="json")

    def events(self, after: int) -> dict[str, Any]:
        """The events after ``after`` as the API's page answers them (made without the
        response model), waiting up to ``WAIT_SECONDS`` for the first and then up to
        ``LINGER_SECONDS`` for more, unless one of them ends a want this build asked for."""

        async def page() -> dict[str, Any]:
            host = self.host
            events, scanned = await operations.events_after(
                host, after, PAGE_LIMIT, None, None, WAIT_SECONDS
            )
            deadline = asyncio.get_running_loop().time() + LINGER_SECONDS
            while events and len(events) < PAGE_LIMIT and not self._ends_asked(events):
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                more, scanned = await operations.events_after(
                    host, scanned, PAGE_LIMIT - len(events), None, None, left
                )
                events.extend(more)
            return {"events": [event_to_dict(e) for e in events], "last_sequence": scanned}

        return self.service.call(page)

    def _ends_asked(self, events: list[Event]) -> bool:
        return any(
            isinstance(e.payload, _ENDED) and e.payload.want_id in self._asked for e in events
        )

    def want(self, want_id: str) -> dict[str, Any]:
        async def one() -> schemas.WantView:
            return operations.want(self.host, want_id)

        return self.service.call(one).model_dump(mode="json")
