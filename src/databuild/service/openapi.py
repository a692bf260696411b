"""The OpenAPI document, completed with what FastAPI cannot see from the routes.

FastAPI documents each route's success response and a 422 with its own validation body. But
this service answers errors with one body, ``{"error": "..."}`` (``app``), and some of them
come from the security middleware in front of every route, which FastAPI never sees:
- 421 for a Host that is not allowed;
- 401 for a write without the token;
- 403 for a cross-site write;
- 413 for a body over the limit;
- 400 for a malformed Content-Length.

``complete`` adds, to every operation, each error status it can return, with the error body
schema. It also adds the bearer security scheme, which writes need when the service has a
token. A generated client then knows every status it can get. tests/service/
test_schemathesis.py runs schemathesis against a live service with a token and finds no
undocumented status. This module decides nothing.
"""

from __future__ import annotations

from typing import Any

from databuild.service.schemas import ErrorResponse
from databuild.service.security import MAX_BODY_BYTES

ERROR_SCHEMA = "ErrorResponse"  # schemas.ErrorResponse: {"error": "..."}
BEARER = "bearer"
_WRITES = frozenset({"post", "put", "patch", "delete"})

# status -> when, for every operation
_EVERY = {
    "400": "Malformed request (e.g. a Content-Length that is not a number)",
    "421": "The Host header is not allowed (a loopback service answers loopback names only)",
    "503": (
        "The service cannot answer now: it is starting (replaying its log), its storage is "
        "unavailable, or it holds its maximum of connections; see Retry-After"
    ),
}
# status -> when, for writes only
_WRITE = {
    "401": "The service has a token and the request lacks 'Authorization: Bearer <token>'",
    "403": "A cross-site (or opaque-Origin) write from a browser, refused",
    "409": "The change is not allowed in the current lifecycle state",
    "413": f"The body is over {MAX_BODY_BYTES} bytes",
    "422": "Bad input: the message names the field",
}
_WITH_PARAMETERS = {"422": "Bad input: the message names the parameter"}
_WITH_PATH = {"404": "No such want, partition, job run or job"}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}
        },
    }


def _validation_schema(response: dict[str, Any]) -> bool:
    ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
    return isinstance(ref, str) and ref.endswith("/HTTPValidationError")


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Add the error statuses, the error body and the bearer scheme to ``document`` (in
    place; also returned)."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.setdefault(ERROR_SCHEMA, ErrorResponse.model_json_schema())
    schemas[ERROR_SCHEMA]["description"] = "The body of every error response: what is wrong."
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "The token in the environment variable named by [service] token_env. Writes need "
            "it when the service has one (always beyond loopback); reads never do."
        ),
    }
    for methods in document.get("paths", {}).values():
        for method, operation in methods.items():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            wanted = dict(_EVERY)
            parameters = operation.get("parameters", [])
            if parameters:
                wanted.update(_WITH_PARAMETERS)
            if any(p.get("in") == "path" for p in parameters):
                wanted.update(_WITH_PATH)
            if method in _WRITES:
                wanted.update(_WRITE)
                wanted.update(_WITH_PATH)  # a want, partition or job it names is unknown
                # anonymous writes are allowed on a loopback service without a token
                operation["security"] = [{BEARER: []}, {}]
            for status, description in sorted(wanted.items()):
                existing = responses.get(status)
                if existing is None or _validation_schema(existing):
                    responses[status] = _error(description)
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused in schemas and f'/{unused}"' not in _refs(document):
            del schemas[unused]
    return document


def _refs(document: dict[str, Any]) -> str:
    """Every $ref in the document, as one string to search."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                found.append(f'{ref}"')
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return " ".join(found)
