"""50 identical ``POST /wants`` at once against a real service: one want, one event."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from .graphs import all_events

CLIENTS = 50


async def _post_all(url: str, body: dict[str, object]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        return await asyncio.gather(
            *(client.post("/api/v1/wants", json=body) for _ in range(CLIENTS))
        )


@pytest.mark.slow
def test_concurrent_identical_posts_make_one_want(served_calendar: str) -> None:
    body: dict[str, object] = {
        "partition_refs": ["weekly/week=2024-W01"],
        "data_date": "2024-01-01",
        "sla_seconds": 3600,
    }
    responses = asyncio.run(_post_all(served_calendar, body))
    assert all(r.status_code == 200 for r in responses), {r.status_code for r in responses}
    ids = {r.json()["wants"][0]["want_id"] for r in responses}
    assert len(ids) == 1
    (want_id,) = ids
    with httpx.Client(base_url=served_calendar, timeout=30) as client:
        listed = client.get(
            "/api/v1/wants", params={"prefix": "weekly/week=2024-W01", "limit": 1000}
        ).json()["wants"]
        assert [w["want_id"] for w in listed] == [want_id]
        created = [
            e
            for e in all_events(client, types="want_created")
            if e["want_created"]["want"]["partition_ref"] == "weekly/week=2024-W01"
        ]
        assert [e["want_created"]["want"]["want_id"] for e in created] == [want_id]
