"""What a build with an embedded service imports: not FastAPI, not httpx.

A cold ``databuild build`` talks to its embedded service in process and its jobs ask the
gateway, so the FastAPI app (~0.2 s to import) and the HTTP client (~25 ms) stay out of its
start-up; they are loaded when something needs them. This guards that: a module-level import
added in the wrong place would put them back on every build's critical path.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("fastapi", "starlette.routing", "httpx")


def loaded_after(*modules: str) -> list[str]:
    code = (
        f"import json, sys; import {', '.join(modules)}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules if m.startswith({HEAVY!r})}})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_the_embedded_build_path_imports_neither_fastapi_nor_httpx() -> None:
    assert (
        loaded_after("databuild.cli.main", "databuild.service.server", "databuild.cli.inprocess")
        == []
    )


def test_the_full_app_still_imports_fastapi() -> None:
    assert "fastapi" in loaded_after("databuild.service.app")
