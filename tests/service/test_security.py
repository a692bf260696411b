"""Who may talk to the service: bearer tokens on writes, refusing to listen beyond
loopback without one, and never logging the token."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from databuild.config import load_config
from databuild.core.errors import InvalidInput
from databuild.service.server import EmbeddedService, ServeOptions, Service

from .graphs import wanted_since

TOKEN = "s3cret-token-do-not-log"

Launcher = Callable[..., tuple[Any, str]]


@pytest.mark.slow
def test_writes_need_the_token_when_one_is_configured(
    calendar_dir: Path, launch_service: Launcher, job_env: dict[str, str]
) -> None:
    proc, url = launch_service(calendar_dir, env={**job_env, "DATABUILD_TOKEN": TOKEN})
    try:
        body = {"partition_refs": ["raw/date=2024-01-01"]}
        with httpx.Client(base_url=url, timeout=30) as client:
            before = client.get("/healthz").json()["last_sequence"]
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": TOKEN},
                {"Authorization": f"Basic {TOKEN}"},
                {"Authorization": f"Bearer {TOKEN}x"},
            ):
                response = client.post("/api/v1/wants", json=body, headers=headers)
                assert response.status_code == 401, response.text
                assert "Authorization: Bearer" in response.json()["error"]
                assert client.delete("/api/v1/wants/x", headers=headers).status_code == 401
            assert wanted_since(client, before) == []
            # reads need no token
            assert client.get("/api/v1/wants").status_code == 200
            good = {"Authorization": f"Bearer {TOKEN}"}
            created = client.post("/api/v1/wants", json=body, headers=good)
            assert created.status_code == 200
            want_id = created.json()["wants"][0]["want_id"]
            assert client.delete(f"/api/v1/wants/{want_id}", headers=good).status_code == 200
            # the Origin check still applies with a token
            assert (
                client.post(
                    "/api/v1/wants", json=body, headers={**good, "Origin": "https://evil.example"}
                ).status_code
                == 403
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert TOKEN not in (calendar_dir / "serve.log").read_text()
    for path in (calendar_dir / ".databuild").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_service_beyond_loopback_without_token_refuses_to_start(
    calendar_dir: Path, host: str
) -> None:
    config = load_config(calendar_dir / "databuild.toml", {})
    with pytest.raises(InvalidInput, match="bearer token is required"):
        Service(config, ServeOptions(host=host, port=0, token=None))
    with pytest.raises(InvalidInput, match="DATABUILD_TOKEN"):
        EmbeddedService(config, ServeOptions(host=host, port=0, token=""))


def test_service_beyond_loopback_with_token_is_allowed(calendar_dir: Path) -> None:
    config = load_config(calendar_dir / "databuild.toml", {})
    service = Service(config, ServeOptions(host="0.0.0.0", port=0, token=TOKEN))
    try:
        assert service.url.startswith("http://127.0.0.1:")
    finally:
        service.sock.close()


@pytest.mark.slow
def test_serve_beyond_loopback_without_token_is_a_one_line_error(
    calendar_dir: Path, databuild_bin: Path, job_env: dict[str, str]
) -> None:
    done = subprocess.run(
        [str(databuild_bin), "serve", "--host", "0.0.0.0", "--port", "0"],
        cwd=calendar_dir,
        env=job_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error:")
    assert "bearer token" in done.stderr
    assert "Traceback" not in done.stderr


def test_token_protected_embedded_service_in_process(calendar_dir: Path) -> None:
    config = load_config(calendar_dir / "databuild.toml", {"CALENDAR_DAYS": "8"})
    with (
        EmbeddedService(config, ServeOptions(port=0, token=TOKEN)) as service,
        httpx.Client(base_url=service.url, timeout=30) as client,
    ):
        body = {"partition_refs": ["nothing/builds=this"]}
        assert client.post("/api/v1/wants", json=body).status_code == 401
        ok = client.post("/api/v1/wants", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        assert ok.json()["wants"][0]["status"] == "failed"
