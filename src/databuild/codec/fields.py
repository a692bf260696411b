"""How each field of a core record maps to the proto schema and to JSON.

The core dataclasses use the proto field names (``core.events`` says so), so conversion is
generic: this module reads each record's type hints once, at import, and turns every field
into a ``FieldPlan`` (text, optional id, number, enum, nested record, tuple). The proto
codec (``codec.payloads``) and the JSON codec (``codec.dicts``) both walk these plans.

It also checks, at import, that every core record and its proto message have the same
field names and that every core enum member has a proto enum value and back, so schema
drift fails loudly the first time anything imports the codec (a test imports it).

Called only by the other codec modules. Must not import generated code itself (it takes
message descriptors as arguments), do I/O, or know about events' meaning.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from enum import Enum, StrEnum
from typing import Any

from databuild.core.events import EVENT_TYPE_NAMES, PAYLOAD_TYPES, EventPayload, MissingDeps
from databuild.core.model import Want
from databuild.core.refs import PartitionRef


class FieldKind(Enum):
    TEXT = "text"  # str (or a NewType of it)
    OPTIONAL_TEXT = "optional_text"  # str | None: "" in proto, None in core and JSON
    INT = "int"
    FLOAT = "float"
    ENUM = "enum"  # a core StrEnum: a number in proto, its short value in JSON
    RECORD = "record"  # a nested core record (Want, MissingDeps)
    TEXT_TUPLE = "text_tuple"  # tuple[str, ...]: a repeated string
    RECORD_TUPLE = "record_tuple"  # tuple[Record, ...]: a repeated message


@dataclass(frozen=True, slots=True)
class FieldPlan:
    name: str
    kind: FieldKind
    enum: type[StrEnum] | None = None  # for ENUM
    record: type | None = None  # for RECORD and RECORD_TUPLE
    is_ref: bool = False  # a PartitionRef (or a tuple of them): parse_ref guards JSON input
    has_default: bool = False  # the dataclass gives a default (JSON input may omit it)


NESTED_RECORDS: tuple[type, ...] = (Want, MissingDeps)
RECORD_TYPES: tuple[type, ...] = (*PAYLOAD_TYPES, *NESTED_RECORDS)


def _upper_snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).upper()


def _payload_types_by_name() -> dict[str, type[EventPayload]]:
    names = {_upper_snake(t.__name__).lower(): t for t in PAYLOAD_TYPES}
    if set(names) != EVENT_TYPE_NAMES:
        raise TypeError(f"codec and core name event types differently: {sorted(names)}")
    return names


PAYLOAD_TYPES_BY_NAME: Mapping[str, type[EventPayload]] = _payload_types_by_name()


def _unwrap_newtype(hint: Any) -> tuple[Any, bool]:
    is_ref = hint is PartitionRef
    while isinstance(hint, typing.NewType):
        hint = hint.__supertype__
    return hint, is_ref


def _plan_field(owner: type, name: str, hint: Any, has_default: bool) -> FieldPlan:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        base, is_ref = _unwrap_newtype(inner[0])
        if len(inner) == 1 and len(args) == 2 and base is str:
            return FieldPlan(name, FieldKind.OPTIONAL_TEXT, is_ref=is_ref, has_default=has_default)
        raise TypeError(f"{owner.__name__}.{name}: only 'str | None' unions are supported")
    if origin is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"{owner.__name__}.{name}: only tuple[X, ...] is supported")
        item, is_ref = _unwrap_newtype(args[0])
        if item is str:
            return FieldPlan(name, FieldKind.TEXT_TUPLE, is_ref=is_ref, has_default=has_default)
        if item in NESTED_RECORDS:
            return FieldPlan(name, FieldKind.RECORD_TUPLE, record=item, has_default=has_default)
        raise TypeError(f"{owner.__name__}.{name}: unsupported tuple item {item!r}")
    base, is_ref = _unwrap_newtype(hint)
    if base is str:
        return FieldPlan(name, FieldKind.TEXT, is_ref=is_ref, has_default=has_default)
    if base is bool:
        raise TypeError(f"{owner.__name__}.{name}: bool fields are not supported yet")
    if base is int:
        return FieldPlan(name, FieldKind.INT, has_default=has_default)
    if base is float:
        return FieldPlan(name, FieldKind.FLOAT, has_default=has_default)
    if isinstance(base, type) and issubclass(base, StrEnum):
        return FieldPlan(name, FieldKind.ENUM, enum=base, has_default=has_default)
    if base in NESTED_RECORDS:
        return FieldPlan(name, FieldKind.RECORD, record=base, has_default=has_default)
    raise TypeError(f"{owner.__name__}.{name}: unsupported field type {hint!r}")


def _plan_record(record: type) -> tuple[FieldPlan, ...]:
    hints = typing.get_type_hints(record)
    return tuple(
        _plan_field(record, f.name, hints[f.name], f.default is not MISSING) for f in fields(record)
    )


PLANS: Mapping[type, tuple[FieldPlan, ...]] = {r: _plan_record(r) for r in RECORD_TYPES}


def enum_numbers(enum: type[StrEnum], descriptor: Any) -> dict[StrEnum, int]:
    """Core member -> proto number, by name (``FailureKind.TIMEOUT`` -> ``FAILURE_KIND_TIMEOUT``).

    Raises TypeError unless the two enums match one to one (ignoring the proto's
    ``*_UNSPECIFIED`` zero value).
    """
    prefix = _upper_snake(descriptor.name) + "_"
    numbers: dict[StrEnum, int] = {}
    for member in enum:
        value = descriptor.values_by_name.get(prefix + member.name)
        if value is None:
            raise TypeError(f"proto enum {descriptor.name} has no value {prefix}{member.name}")
        numbers[member] = value.number
    unmatched = {v.name for v in descriptor.values if v.number} - {prefix + m.name for m in enum}
    if unmatched:
        raise TypeError(f"core enum {enum.__name__} lacks {', '.join(sorted(unmatched))}")
    return numbers


def check_message_fields(record: type, descriptor: Any) -> None:
    """Raise TypeError unless ``record`` and the proto message have the same field names."""
    ours = {p.name for p in PLANS[record]}
    theirs = set(descriptor.fields_by_name)
    if ours != theirs:
        raise TypeError(
            f"{record.__name__} and proto {descriptor.name} differ: "
            f"only in core {sorted(ours - theirs)}, only in proto {sorted(theirs - ours)}"
        )
