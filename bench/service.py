"""A real ``databuild serve`` subprocess for benchmarks that talk to the API.

Used by the reaction-latency and API benchmarks: it writes nothing itself; the caller
gives a graph directory holding a databuild.toml. The service's URL is read from the
discovery file it writes (``.databuild/service.json``) once it is up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from bench.common import databuild_exe, job_env


class ServeProcess:
    def __init__(self, graph_dir: Path) -> None:
        self.graph_dir = graph_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> ServeProcess:
        self.proc = subprocess.Popen(
            [databuild_exe(), "serve", "--port", "0"],
            cwd=self.graph_dir,
            env=job_env(),
            stdout=subprocess.DEVNULL,
            stderr=open(self.graph_dir / "serve.log", "wb"),
        )
        discovery = self.graph_dir / ".databuild" / "service.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"databuild serve exited: {(self.graph_dir / 'serve.log').read_text()}"
                )
            try:
                url = str(json.loads(discovery.read_text())["url"])
                httpx.get(f"{url}/healthz", timeout=2).raise_for_status()
                self.url = url
                return self
            except (OSError, ValueError, KeyError, httpx.HTTPError):
                time.sleep(0.05)
        raise RuntimeError("databuild serve did not come up within 60 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
