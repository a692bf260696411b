"""Every dashboard route over HTTP against a real ``databuild serve``: bad input in the URL
is a 4xx HTML page saying what is wrong (never a 5xx, never a traceback), every page
carries the security headers, and what comes from the graph is escaped."""

from __future__ import annotations

import itertools
import re
from typing import Any

import httpx
import pytest

from .conftest import Service

PAGES = ["/", "/wants", "/runs", "/partitions", "/sla", "/graph", "/new"]
NASTY = [
    "",
    "x" * 5000,
    "%00",
    "\x00",
    "-1",
    "0",
    "99999999999999999999999",
    "abc",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "é€😀",
    "a,b,,c",
    "active",
    "failed",
]
PARAMS = ["status", "prefix", "source", "root", "cursor", "limit", "job"]


def _created(api: httpx.Client, ref: str) -> dict[str, Any]:
    response = api.post("/api/v1/wants", json={"partition_refs": [ref]})
    assert response.status_code == 200, response.text
    want: dict[str, Any] = response.json()["wants"][0]
    return want


def _check_page(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.request.url, response.text[:500])
    assert "Traceback" not in response.text


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_with_the_security_headers(api: httpx.Client, path: str) -> None:
    response = api.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    # no inline script: every <script> has a src under /static/
    scripts = re.findall(r"<script\b[^>]*>", response.text)
    assert scripts and all('src="/static/' in tag for tag in scripts), scripts


@pytest.mark.parametrize("path", PAGES)
def test_bad_query_parameters_are_never_a_server_error(api: httpx.Client, path: str) -> None:
    for name, value in itertools.product(PARAMS, NASTY):
        _check_page(api.get(path, params={name: value}))
    _check_page(api.get(path + "?status=%ZZ&limit=%&cursor"))
    _check_page(api.get(path, params=[("status", "failed"), ("status", "bogus")]))


def test_bad_filters_say_what_is_wrong(api: httpx.Client) -> None:
    cases = {
        "/wants?status=bogus": "status 'bogus' is not one of",
        "/wants?source=nowhere": "source 'nowhere' is not one of",
        "/wants?limit=0": "limit must be a whole number from 1 to 1000",
        "/wants?cursor=nope": "cursor 'nope' is not a cursor this service gave out",
        "/runs?status=exploded": "status 'exploded' is not one of",
        "/partitions?status=shiny": "status 'shiny' is not one of",
        "/sla?cursor=x": "cursor 'x' is not a cursor",
        "/wants?prefix=" + "p" * 600: "query parameter 'prefix' is longer than 512",
    }
    for url, message in cases.items():
        response = api.get(url)
        assert response.status_code == 422, (url, response.text[:300])
        assert message in response.text.replace("&#39;", "'"), (url, response.text[:800])


@pytest.mark.parametrize(
    "path",
    [
        "/wants/nope",
        "/wants/" + "w" * 500,
        "/wants/%3Cscript%3E",
        "/runs/nope",
        "/runs/%00",
        "/partitions/no/such=thing",
        "/partitions/a//b",
        "/partitions/" + "p" * 700,
        "/partitions/%00",
        "/partitions/%3Cb%3E",
    ],
)
def test_unknown_or_invalid_ids_are_a_4xx_page(api: httpx.Client, path: str) -> None:
    response = api.get(path)
    assert 400 <= response.status_code < 500, (path, response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("text/html")
    assert "<script>" not in response.text.split("</head>", 1)[1].replace(
        '<script src="/static/', ""
    )


def test_a_hostile_ref_is_escaped_everywhere(api: httpx.Client) -> None:
    hostile = "x/a=<script>alert(1)</script>"
    want = _created(api, hostile)
    for path in (f"/wants/{want['want_id']}", "/wants", "/"):
        body = api.get(path).text
        assert "<script>alert(1)</script>" not in body, path
    assert "x/a=&lt;script&gt;alert(1)&lt;/script&gt;" in api.get(f"/wants/{want['want_id']}").text


def test_pages_show_the_graphs_objects(api: httpx.Client, service: Service) -> None:
    want = _created(api, "hold/id=pages")
    detail = api.get(f"/wants/{want['want_id']}").text
    assert "hold/id=pages" in detail and 'data-cancel="' in detail
    assert "hold/id=pages" in api.get("/wants", params={"prefix": "hold/"}).text
    assert "hold/id=pages" in api.get("/partitions", params={"prefix": "hold/"}).text
    assert api.get("/partitions/hold/id=pages").status_code == 200
    overview = api.get("/").text
    assert "<b>peer</b> at <code>http://127.0.0.1:9</code>: peer/{x}" in overview
    svg = api.get("/graph.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert "hold/id={id}" in svg.text and "<svg" in svg.text and "upstream peer" in svg.text
    api.delete(f"/api/v1/wants/{want['want_id']}")


def test_a_foreign_origin_cannot_write_through_the_api(api: httpx.Client) -> None:
    response = api.post(
        "/api/v1/wants",
        json={"partition_refs": ["hold/id=foreign"], "source": "dashboard"},
        headers={"Origin": "http://evil.example"},
    )
    assert response.status_code == 403
    assert api.get("/api/v1/wants", params={"prefix": "hold/id=foreign"}).json()["wants"] == []


def test_static_files_ship_with_their_license(api: httpx.Client) -> None:
    assert api.get("/static/htmx.min.js").status_code == 200
    assert "Zero-Clause BSD" in api.get("/static/htmx.LICENSE").text
    assert api.get("/static/../routes.py").status_code == 404
    assert api.get("/static/nope.js").status_code == 404
