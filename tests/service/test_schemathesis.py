"""schemathesis against the OpenAPI document a real ``databuild serve`` serves: no 5xx, and
every response (status code, content type, headers, body) matches the document.

One test per operation and generation mode (valid and invalid requests), a few dozen
examples each. The operations are listed from the app itself, so a new route is fuzzed
without editing this file. The SSE stream never ends by design, so it is tested in
test_api.py instead; a generated long-poll ``wait`` is shortened so that the run stays
short (its validation is still exercised by invalid values).

schemathesis' own pytest loader (``from_fixture``) does not work with this pytest, so the
strategies are driven by Hypothesis directly.

A negative case is held to "must be rejected" only if it is invalid as sent: a query
parameter is a string on the wire, so a mutated value can serialize into a valid one (an
integer ``0`` for an array of refs becomes ``ref=0``, one valid ref). Such a case is
checked as a positive one instead (``_valid_as_sent``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jsonschema_rs
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import checks
from schemathesis.generation import GenerationMode

from databuild.config import load_config
from databuild.service.app import create_app
from databuild.service.host import GraphHost
from databuild.service.security import MAX_BODY_BYTES, MAX_HEAD_BYTES

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


def _as_sent(value: str, schema: dict[str, Any]) -> Any:
    """A query value as the server reads it for this schema: numbers are parsed."""
    types = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
    if "integer" in types and value.lstrip("-").isdigit():
        return int(value)
    if "number" in types:
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _valid_as_sent(case: Any, method: str, path: str) -> bool:
    """True when a case of a GET without path parameters sends a valid query after all:
    every parameter's values, as they arrive (strings, repeated for arrays, the last one
    for a scalar), meet its schema."""
    operation = _document()["paths"][path][method.lower()]
    parameters = operation.get("parameters", [])
    if method != "GET" or any(p.get("in") != "query" for p in parameters):
        return False
    kwargs = case.as_transport_kwargs(base_url="http://127.0.0.1")
    prepared = requests.Request("GET", kwargs["url"], params=kwargs.get("params")).prepare()
    sent = parse_qsl(urlsplit(prepared.url or "").query, keep_blank_values=True)
    for parameter in parameters:
        schema = parameter.get("schema", {})
        values = [v for k, v in sent if k == parameter["name"]]
        if not values:
            if parameter.get("required"):
                return False
            continue
        instance = values if schema.get("type") == "array" else _as_sent(values[-1], schema)
        if not jsonschema_rs.validator_for(schema).is_valid(instance):
            return False
    return True


def _head_fits(case: Any) -> bool:
    """A request whose URL passes the server's limit on the request head gets uvicorn's
    plain 400 and a closed connection before any route sees it (docs/api.md): out of scope
    of the document."""
    kwargs = case.as_transport_kwargs(base_url="http://127.0.0.1")
    prepared = requests.Request(
        kwargs["method"], kwargs["url"], params=kwargs.get("params"), headers=kwargs.get("headers")
    ).prepare()
    head = len(prepared.url or "") + sum(len(k) + len(v) + 4 for k, v in prepared.headers.items())
    return head < MAX_HEAD_BYTES - 4096


def _over_the_body_limit(case: Any) -> bool:
    """A body over the limit is refused with 413 before it is read (documented), which
    schemathesis' negative-data check does not count among the rejections it expects."""
    body = getattr(case, "body", None)
    if body is None or body.__class__.__name__ == "NotSet":
        return False
    try:
        size = len(json.dumps(body).encode())
    except (TypeError, ValueError):
        return False
    return size > MAX_BODY_BYTES


def _fuzzed(max_examples: int) -> settings:
    """Hypothesis settings of every test here: a fixed number of examples, derandomized, no
    deadline and no example database (each run tries the same requests)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )


def _to_send(case: Any) -> None:
    """Shorten a generated long-poll ``wait`` (the run stays short), and pass over a case
    whose request head is too large to reach a route (``_head_fits``)."""
    wait = case.query.get("wait") if isinstance(case.query, dict) else None
    if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 < wait <= 60:
        case.query["wait"] = min(wait, 0.01)
    assume(_head_fits(case))


def _served(launch_service: Launcher, graph: Path, **options: Any) -> Iterator[Any]:
    """The schema a service of ``graph`` serves, for a module fixture to yield; the
    service is stopped after the module."""
    proc, url = launch_service(graph, **options)
    yield schemathesis.openapi.from_url(f"{url}/openapi.json")
    proc.terminate()
    proc.wait(timeout=30)


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
    yield from _served(launch_service, calendar_factory())


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("method", "path"), _operations())
def test_api_matches_its_openapi_document(
    served_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = served_schema[path][method]
    chosen = NEGATIVE_CHECKS if mode is GenerationMode.NEGATIVE else CHECKS

    @given(case=operation.as_strategy(generation_mode=mode))
    @_fuzzed(MAX_EXAMPLES)
    def check(case: Any) -> None:
        _to_send(case)
        checks_for_case = chosen
        if mode is GenerationMode.NEGATIVE and (
            _valid_as_sent(case, method, path) or _over_the_body_limit(case)
        ):
            checks_for_case = CHECKS
        case.call_and_validate(checks=checks_for_case, timeout=30)

    try:
        check()
    except Unsatisfiable:
        # schemathesis found no invalid request to send: that must be because there is
        # none (no body, only free-form string path parameters), never a generator gap.
        if mode is not GenerationMode.NEGATIVE or not _nothing_to_get_wrong(method, path):
            raise


TOKEN = "schemathesis-secret-token"
TOKEN_EXAMPLES = 10
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@pytest.fixture(scope="module")
def token_schema(
    calendar_factory: Callable[[], Path], launch_service: Launcher, job_env: dict[str, str]
) -> Iterator[Any]:
    """A service with a token: writes without it are 401."""
    env = {**job_env, "DATABUILD_TOKEN": TOKEN}
    yield from _served(launch_service, calendar_factory(), env=env)


def test_the_document_has_the_bearer_scheme_and_the_error_body() -> None:
    document = _document()
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            statuses = {"400", "421", "503"}
            if method.upper() in WRITES:
                statuses |= {"401", "403", "404", "409", "413", "422"}
                assert operation["security"] == [{"bearer": []}, {}], (method, path)
            responses = operation["responses"]
            assert statuses <= set(responses), (method, path, sorted(responses))
            for status in statuses - {"503"} if path in ("/healthz", "/readyz") else statuses:
                schema = responses[status]["content"]["application/json"]["schema"]
                assert schema == error, (method, path, status)


def test_the_document_is_valid_openapi() -> None:
    from openapi_spec_validator import validate

    validate(_document())


@pytest.mark.parametrize(("method", "path"), _operations())
def test_with_a_token_every_status_is_documented(token_schema: Any, method: str, path: str) -> None:
    """Each generated request is sent with the token, without it, with a Host that is not
    allowed and, for a write, from another site: every answer (200, 401, 403, 421, 4xx of
    the input) must be a documented status with a documented body."""
    operation = token_schema[path][method]
    seen: set[int] = set()

    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    @_fuzzed(TOKEN_EXAMPLES)
    def check(case: Any) -> None:
        _to_send(case)
        variants: list[dict[str, str]] = [
            {"Authorization": f"Bearer {TOKEN}"},
            {},
            {"Authorization": f"Bearer {TOKEN}", "Host": "evil.example"},
        ]
        if method in WRITES:
            variants.append({"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"})
        for headers in variants:
            response = case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)
            seen.add(response.status_code)

    check()
    assert 421 in seen
    if method in WRITES:
        assert {401, 403} <= seen, seen
