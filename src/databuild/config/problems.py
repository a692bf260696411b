"""Turn pydantic validation errors into ``ConfigError``: file, dotted key, plain words.

The loader calls ``config_error_from`` when ``GraphFile`` rejects a file. The first problem
becomes the message (``databuild.toml: jobs.ingest.retries: must be at least 0, not -1``) and
the keys of any others are listed after it, so a user can fix them in one pass. It never
shows a pydantic dump, error URL or Python type name a user did not write.
"""

from __future__ import annotations

import difflib
import re
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from databuild.core.errors import ConfigError

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list (written [ ... ])",
    "tuple_type": "a list (written [ ... ])",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "is_instance_of": "a string",
}


def dotted_key(loc: tuple[int | str, ...]) -> str:
    """``("jobs", "ingest", "outputs", 0)`` -> ``jobs.ingest.outputs[0]``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        name = part if _BARE_KEY.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
        text = f"{text}.{name}" if text else name
    return text


def describe_value(value: object) -> str:
    """How a TOML value reads in a sentence: ``the string "2"``, ``a table``, ``true``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__} value"


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        else:
            return annotation


def table_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model that validates the table at ``loc`` (for listing its allowed keys)."""
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif get_origin(current) is list:
            current = get_args(current)[0]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unknown_key(root: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    name = str(loc[-1])
    table = table_at(root, loc[:-1])
    if table is None:
        return f"unknown key {name!r}"
    allowed = sorted(table.model_fields)
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {name!r}{hint}; the keys allowed here are: {', '.join(allowed)}"


def _missing(root: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    if table_at(root, loc) is not None:
        return f"the required table [{dotted_key(loc)}] is missing"
    parent = table_at(root, loc[:-1])
    field = parent.model_fields.get(str(loc[-1])) if parent is not None else None
    if field is not None and get_origin(_unwrap(field.annotation)) is dict:
        return f"at least one [{dotted_key(loc)}.<name>] table is required"
    return "this required key is missing"


def problem_for(root: type[BaseModel], error: ErrorDetails) -> str:
    """One pydantic error in plain words, without the key (the caller names it)."""
    kind = error["type"]
    ctx = error.get("ctx", {})
    value = error.get("input")
    loc = error["loc"]
    if kind == "missing":
        return _missing(root, loc)
    if kind == "extra_forbidden":
        return _unknown_key(root, loc)
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]}, not {describe_value(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}, not {value!r}"
    if kind == "greater_than":
        return f"must be greater than {ctx['gt']}, not {value!r}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}, not {value!r}"
    if kind == "less_than":
        return f"must be less than {ctx['lt']}, not {value!r}"
    if kind == "too_short":
        if isinstance(value, dict):
            return f"is empty; at least one [{dotted_key(loc)}.<name>] table is required"
        if ctx.get("min_length") == 1:
            return "must not be empty"
        return f"must have at least {ctx.get('min_length')} entries"
    if kind == "string_too_short":
        return "must not be an empty string"
    # A kind this file does not expect: pydantic's own one-line sentence, minus its jargon.
    return str(error["msg"]).replace("Input should", "must").replace("input", "value")


def config_error_from(path: str, root: type[BaseModel], exc: ValidationError) -> ConfigError:
    """The ConfigError for ``exc``: its first problem, and the keys of the rest."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    key = dotted_key(_key_loc(first["loc"]))
    problem = problem_for(root, first)
    others = []
    for error in errors[1:]:
        other = dotted_key(_key_loc(error["loc"])) or "(top level)"
        if other not in others and other != key:
            others.append(other)
    if others:
        problem += f" (also wrong: {', '.join(others)})"
    return ConfigError(path, key, problem)


def _key_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    # pydantic marks a bad dict key as (..., "KEY", "[key]"); the key itself is the culprit.
    return loc[:-1] if loc and loc[-1] == "[key]" else loc
