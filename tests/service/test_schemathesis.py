"""schemathesis against the OpenAPI document a real ``databuild serve`` serves: no 5xx, and
every response (status code, content type, headers, body) matches the document.

One test per operation and generation mode (valid and invalid requests), a few dozen
examples each. The operations are listed from the app itself, so a new route is fuzzed
without editing this file. The SSE stream never ends by design, so it is tested in
test_api.py instead; a generated long-poll ``wait`` is shortened so that the run stays
short (its validation is still exercised by invalid values).

schemathesis' own pytest loader (``from_fixture``) does not work with this pytest, so the
strategies are driven by Hypothesis directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import checks
from schemathesis.generation import GenerationMode

from databuild.config import load_config
from databuild.service.app import create_app
from databuild.service.host import GraphHost

pytestmark = pytest.mark.slow

Launcher = Callable[..., tuple[Any, str]]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "calendar" / "databuild.toml"
NEVER_ENDS = {("GET", "/api/v1/events/stream")}
MAX_EXAMPLES = 25

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
NEGATIVE_CHECKS = [*CHECKS, checks.negative_data_rejection]


def _document() -> dict[str, Any]:
    document: dict[str, Any] = create_app(GraphHost(load_config(EXAMPLE, {}))).openapi()
    return document


def _nothing_to_get_wrong(method: str, path: str) -> bool:
    """No body, and only parameters that accept any string: no request is invalid."""
    operation = _document()["paths"][path][method.lower()]
    if "requestBody" in operation:
        return False
    for parameter in operation.get("parameters", []):
        schema = {k: v for k, v in parameter.get("schema", {}).items() if k != "title"}
        if parameter.get("in") != "path" or schema != {"type": "string"}:
            return False
    return True


def _operations() -> list[tuple[str, str]]:
    document = _document()
    return [
        (method.upper(), path)
        for path, methods in document["paths"].items()
        for method in methods
        if (method.upper(), path) not in NEVER_ENDS
    ]


@pytest.fixture(scope="module")
def served_schema(calendar_factory: Callable[[], Path], launch_service: Launcher) -> Iterator[Any]:
    proc, url = launch_service(calendar_factory())
    yield schemathesis.openapi.from_url(f"{url}/openapi.json")
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("method", "path"), _operations())
def test_api_matches_its_openapi_document(
    served_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = served_schema[path][method]
    chosen = NEGATIVE_CHECKS if mode is GenerationMode.NEGATIVE else CHECKS

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: Any) -> None:
        wait = case.query.get("wait") if isinstance(case.query, dict) else None
        if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 < wait <= 60:
            case.query["wait"] = min(wait, 0.01)
        case.call_and_validate(checks=chosen, timeout=30)

    try:
        check()
    except Unsatisfiable:
        # schemathesis found no invalid request to send: that must be because there is
        # none (no body, only free-form string path parameters), never a generator gap.
        if mode is not GenerationMode.NEGATIVE or not _nothing_to_get_wrong(method, path):
            raise
