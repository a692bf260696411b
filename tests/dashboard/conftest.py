"""The dashboard tests' fixtures: a real ``databuild serve`` on a calendar copy with test
jobs, and a real headless Chromium (Debian's ``chromium`` package) driven by Playwright.

Chromium missing is a failure, not a skip: ``.ci/run`` installs it. Screenshots go to
``build/dashboard-screenshots/`` (or ``$DATABUILD_SCREENSHOT_DIR``), which CI keeps.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

REPO = Path(__file__).resolve().parent.parent.parent
Launcher = Callable[..., tuple["subprocess.Popen[bytes]", str]]

CHROMIUM = os.environ.get("DATABUILD_CHROMIUM", "/usr/bin/chromium")
STEP_TIMEOUT_MS = 30_000  # every browser step is bounded
SCREENSHOT_DIR = Path(
    os.environ.get("DATABUILD_SCREENSHOT_DIR", REPO / "build" / "dashboard-screenshots")
)

# ``hold`` sleeps until killed (its wants stay active); ``chatty`` prints a line every 0.2 s
# for a minute (a log to tail), and a hostile one first
DASHBOARD_JOBS = """
[executor]
max_parallel = 8

[jobs.hold]
outputs = ["hold/id={id}"]
command = ["python", "-c", "import time; time.sleep(3600)"]
timeout = "2h"

# declared, never reachable: the pages show what the config declares
[upstreams.peer]
url = "http://127.0.0.1:9"
partitions = ["peer/{x}"]

[jobs.chatty]
outputs = ["chatty/id={id}"]
command = ["python", "-c", "import time\\nprint('<script>alert(1)</script> in a log', flush=True)\\nfor i in range(300):\\n    print(f'chatty line {i}', flush=True)\\n    time.sleep(0.2)"]
timeout = "5m"
"""


@dataclass
class Service:
    url: str
    directory: Path


def add_dashboard_jobs(directory: Path) -> None:
    config = directory / "databuild.toml"
    config.write_text(config.read_text() + DASHBOARD_JOBS)


@pytest.fixture(scope="module")
def service(calendar_factory: Callable[[], Path], launch_service: Launcher) -> Iterator[Service]:
    directory = calendar_factory()
    add_dashboard_jobs(directory)
    proc, url = launch_service(directory)
    yield Service(url, directory)
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def api(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: the dashboard's browser tests need it "
            "(apt-get install -y chromium, as .ci/run does)"
        )
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    yield browser
    browser.close()


@dataclass
class Watched:
    page: Page
    dialogs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # page errors and CSP violations
    answer: str | None = None  # what to type into a prompt (else dialogs are dismissed)


def _watch(page: Page) -> Watched:
    watched = Watched(page)

    def on_console(message: object) -> None:
        text = str(getattr(message, "text", ""))
        if "Content Security Policy" in text or "Refused to" in text:
            watched.problems.append(text)

    def on_dialog(dialog: object) -> None:
        watched.dialogs.append(str(getattr(dialog, "message", "")))
        if watched.answer is not None:
            dialog.accept(watched.answer)  # type: ignore[attr-defined]
        else:
            dialog.dismiss()  # type: ignore[attr-defined]

    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.problems.append(str(error)))
    page.on("dialog", on_dialog)
    return watched


@pytest.fixture
def page(browser: Browser) -> Iterator[Watched]:
    """A fresh browser context at 1280x800; at the end, no script error, no CSP violation."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    watched = _watch(context.new_page())
    yield watched
    context.close()
    assert watched.problems == [], watched.problems


DOC_IMAGES = REPO / "docs" / "images"
DOC_SHOTS = frozenset({"overview", "want-tree", "sla", "run-log", "graph", "overview-narrow"})


def screenshot(page: Page, name: str) -> Path:
    """The whole page into the screenshot folder; with ``DATABUILD_UPDATE_DOCS=1`` also the
    visible part (small) of the pages docs/dashboard.md shows, into docs/images/."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("DATABUILD_UPDATE_DOCS") == "1" and name in DOC_SHOTS:
        page.screenshot(path=str(DOC_IMAGES / f"dashboard-{name}.png"), scale="css")
    return path
