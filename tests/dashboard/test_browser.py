"""The dashboard in a real headless Chromium against a real ``databuild serve``.

Each test drives the pages as the on-call engineer would and waits (bounded by Playwright's
step timeout) for what the event stream brings; none reloads the page to see a change:
``window.dashboardMarker``, set once, survives only while the page is not reloaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from .conftest import Launcher, Service, Watched, add_dashboard_jobs, screenshot

HOSTILE = "x/a=<script>alert(1)</script>"


def create(api: httpx.Client, *refs: str, **fields: Any) -> list[dict[str, Any]]:
    response = api.post("/api/v1/wants", json={"partition_refs": list(refs), **fields})
    assert response.status_code == 200, response.text
    wants: list[dict[str, Any]] = response.json()["wants"]
    return wants


def mark(page: Page) -> None:
    page.wait_for_selector("#live[data-state=live]")
    page.evaluate("window.dashboardMarker = 42")


def not_reloaded(page: Page) -> None:
    assert page.evaluate("window.dashboardMarker") == 42, "the page was reloaded"


def test_overview_renders_and_is_live(page: Watched, service: Service) -> None:
    p = page.page
    p.goto(service.url + "/")
    expect(p.locator("h1")).to_contain_text("Overview of calendar")
    expect(p.locator("#live")).to_have_attribute("data-state", "live")
    headers = p.request.get(service.url + "/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    screenshot(p, "overview")


def test_create_a_want_from_the_page_and_watch_it_satisfied(
    page: Watched, service: Service
) -> None:
    p = page.page
    p.goto(service.url + "/new")
    p.fill("textarea[name=refs]", "daily/date=2024-01-03")
    p.fill("input[name=sla]", "1h")
    p.click("button[type=submit]")
    link = p.locator("#created a")
    expect(link).to_have_text("daily/date=2024-01-03")
    screenshot(p, "new-want")
    link.click()
    mark(p)
    expect(p.locator("#want-status")).to_have_text("satisfied")
    not_reloaded(p)
    expect(p.locator("#timeline")).to_contain_text("want_satisfied")
    expect(p.locator(".facts")).to_contain_text("dashboard")
    screenshot(p, "want")


def test_bad_input_in_the_create_form_says_what_is_wrong(page: Watched, service: Service) -> None:
    p = page.page
    p.goto(service.url + "/new")
    p.fill("textarea[name=refs]", "daily/date=2024-01-04")
    p.fill("input[name=sla]", "soon")
    p.click("button[type=submit]")
    expect(p.locator("#new-want-result")).to_contain_text('SLA "soon" is not a duration')
    p.fill("input[name=sla]", "")
    p.fill("textarea[name=refs]", "a//b")
    p.click("button[type=submit]")
    expect(p.locator("#new-want-result")).to_contain_text("Not created: partition_refs[0]")


def test_cancel_a_want_from_its_page(page: Watched, service: Service, api: httpx.Client) -> None:
    (want,) = create(api, "hold/id=cancel-me")
    p = page.page
    p.goto(f"{service.url}/wants/{want['want_id']}")
    mark(p)
    expect(p.locator("#want-status")).to_have_text(re.compile("pending|building"))
    p.click("button[data-cancel]")
    expect(p.locator("#want-status")).to_have_text("canceled")
    not_reloaded(p)
    assert api.get(f"/api/v1/wants/{want['want_id']}").json()["want"]["status"] == "canceled"


def test_a_running_runs_log_is_tailed_live(
    page: Watched, service: Service, api: httpx.Client
) -> None:
    (want,) = create(api, "chatty/id=tail")
    p = page.page
    p.goto(f"{service.url}/wants/{want['want_id']}")
    run_link = p.locator("#want-runs a[href^='/runs/']").first
    run_link.click()
    mark(p)
    log = p.locator("#log")
    expect(log).to_contain_text("chatty line 2")
    expect(log).to_contain_text("chatty line 12")  # arrived after the page was open
    not_reloaded(p)
    # the hostile line is text, not markup
    expect(log).to_contain_text("<script>alert(1)</script> in a log")
    assert p.locator("#log script").count() == 0
    expect(p.locator("#log-state")).to_contain_text("following")
    screenshot(p, "run-log")
    api.delete(f"/api/v1/wants/{want['want_id']}")
    expect(p.locator("#run-status")).to_have_attribute("data-run-status", "canceled")
    expect(p.locator("#log-state")).to_contain_text("complete")
    assert page.dialogs == []


def test_an_sla_violation_appears_live_with_its_blame(
    page: Watched, service: Service, api: httpx.Client
) -> None:
    p = page.page
    p.goto(service.url + "/sla")
    mark(p)
    (want,) = create(api, "hold/id=late", sla_seconds=1)
    row = p.locator("#violations tr", has_text="hold/id=late")
    expect(row).to_be_visible()
    expect(row.locator(".blame")).to_contain_text("hold/id=late")
    not_reloaded(p)
    screenshot(p, "sla")
    api.delete(f"/api/v1/wants/{want['want_id']}")


def test_follow_the_want_chain_tree(page: Watched, service: Service, api: httpx.Client) -> None:
    (want,) = create(api, "weekly/week=2024-W01")
    p = page.page
    p.goto(f"{service.url}/wants/{want['want_id']}")
    mark(p)
    expect(p.locator("#want-status")).to_have_text("satisfied")
    tree = p.locator("#tree")
    expect(tree.locator("> li > .tree-node")).to_contain_text("weekly/week=2024-W01")
    child = tree.locator("li li .tree-node a", has_text="daily/date=2024-01-01")
    expect(child).to_be_visible()
    grandchild = tree.locator("li li li .tree-node", has_text="raw/date=2024-01-01")
    expect(grandchild.locator(".status")).to_have_text("satisfied")
    screenshot(p, "want-tree")
    p.keyboard.press("Tab")  # keyboard: the links are reachable
    child.focus()
    p.keyboard.press("Enter")
    expect(p.locator("#want-ref")).to_have_text("daily/date=2024-01-01")
    expect(p.locator("#tree")).to_contain_text("weekly/week=2024-W01")  # same root


def test_a_hostile_ref_renders_as_text_and_runs_no_script(
    page: Watched, service: Service, api: httpx.Client
) -> None:
    (want,) = create(api, HOSTILE)
    p = page.page
    for path in (
        f"/wants/{want['want_id']}",
        "/wants?prefix=x/",
        "/",
        "/partitions/x/a=%3Cscript%3Ealert(1)%3C/script%3E",
        "/wants?prefix=%3Cscript%3Ealert(2)%3C/script%3E",
    ):
        p.goto(service.url + path)
        p.wait_for_selector("#live[data-state=live]")
        assert p.locator("main script").count() == 0
    p.goto(f"{service.url}/wants/{want['want_id']}")
    expect(p.locator("#want-ref")).to_have_text(HOSTILE)
    assert page.dialogs == []


def test_a_foreign_origin_cannot_write(page: Watched, service: Service, api: httpx.Client) -> None:
    p = page.page
    evil = "http://evil.example/"
    p.route(
        evil,
        lambda route: route.fulfill(
            body="<html><body>evil</body></html>", content_type="text/html"
        ),
    )
    p.goto(evil)
    status = p.evaluate(
        """async (url) => {
            try {
                const r = await fetch(url + "/api/v1/wants", {method: "POST", mode: "no-cors",
                    headers: {"Content-Type": "text/plain"},
                    body: JSON.stringify({partition_refs: ["hold/id=evil"]})});
                return r.type;
            } catch (e) { return "blocked: " + e; }
        }""",
        service.url,
    )
    assert status in {"opaque"} or status.startswith("blocked"), status
    found = api.get("/api/v1/wants", params={"prefix": "hold/id=evil"}).json()["wants"]
    assert found == []


def test_a_lost_connection_says_so_and_resumes(
    page: Watched, calendar_factory: Callable[[], Path], launch_service: Launcher
) -> None:
    directory = calendar_factory()
    add_dashboard_jobs(directory)
    proc, url = launch_service(directory)
    port = url.rsplit(":", 1)[1]
    p = page.page
    p.goto(url + "/wants?prefix=hold/")
    mark(p)
    before = int(p.locator("#live").get_attribute("data-last-event-id") or "0")
    proc.terminate()
    proc.wait(timeout=30)
    expect(p.locator("#live")).to_have_attribute("data-state", "lost")
    expect(p.locator("#live")).to_contain_text("lost")
    screenshot(p, "connection-lost")
    proc, url = launch_service(directory, "--port", port)  # the same address again
    expect(p.locator("#live")).to_have_attribute("data-state", "live")
    with httpx.Client(base_url=url, timeout=30) as api:
        create(api, "hold/id=after-restart")
    expect(p.locator("#wants")).to_contain_text("hold/id=after-restart")
    not_reloaded(p)
    after = int(p.locator("#live").get_attribute("data-last-event-id") or "0")
    assert after > before
    proc.terminate()
    proc.wait(timeout=30)


def test_narrow_screen(page: Watched, service: Service) -> None:
    p = page.page
    p.set_viewport_size({"width": 390, "height": 844})
    p.goto(service.url + "/")
    expect(p.locator("nav a[href='/wants']")).to_be_visible()
    width = p.evaluate("document.documentElement.scrollWidth")
    assert width <= 390 + 1, f"the overview is {width}px wide on a 390px screen"
    screenshot(p, "overview-narrow")
    p.goto(service.url + "/graph")
    expect(p.locator("svg.graph")).to_be_visible()
    p.set_viewport_size({"width": 1280, "height": 800})
    screenshot(p, "graph")


def test_a_token_protected_service_asks_once_and_keeps_it_in_session_storage(
    page: Watched,
    calendar_factory: Callable[[], Path],
    launch_service: Launcher,
    job_env: dict[str, str],
) -> None:
    directory = calendar_factory()
    add_dashboard_jobs(directory)
    proc, url = launch_service(directory, env={**job_env, "DATABUILD_TOKEN": "s3cret-token"})
    p = page.page
    p.goto(url + "/new")
    page.answer = "wrong-token"
    p.fill("textarea[name=refs]", "hold/id=token-1")
    p.click("button[type=submit]")
    expect(p.locator("#new-want-result")).to_contain_text("Not created: writes need the header")
    assert p.evaluate("sessionStorage.getItem('databuild-token')") is None  # a bad one is forgotten
    page.answer = "s3cret-token"
    p.click("button[type=submit]")
    expect(p.locator("#created a")).to_have_text("hold/id=token-1")
    assert len(page.dialogs) == 2
    assert p.evaluate("sessionStorage.getItem('databuild-token')") == "s3cret-token"
    assert p.context.cookies() == [] and p.evaluate("document.cookie") == ""
    p.fill("textarea[name=refs]", "hold/id=token-2")
    p.click("button[type=submit]")
    expect(p.locator("#created a")).to_have_text("hold/id=token-2")
    assert len(page.dialogs) == 2, "the token was asked for again"
    with httpx.Client(base_url=url, timeout=30) as api:
        wants = api.get("/api/v1/wants", params={"prefix": "hold/id=token"}).json()["wants"]
        assert {w["source"] for w in wants} == {"dashboard"} and len(wants) == 2
    proc.terminate()
    proc.wait(timeout=30)
