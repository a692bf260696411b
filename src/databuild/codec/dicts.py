"""Core events, payloads and wants <-> JSON-ready dicts named like the proto fields.

The HTTP API, the CLI's ``--json`` output and the cross-graph event stream all speak these
dicts, so their keys are exactly the proto field names and an event looks like::

    {"sequence": 7, "timestamp": 1700000000.5, "type": "want_created",
     "want_created": {"want": {"want_id": "w...", "parent_want_id": null, ...}}}

Conventions (one choice, used everywhere):
- An optional id or ref that is absent is ``None`` (JSON ``null``), not the proto's ``""``;
  on input both ``null`` and ``""`` mean absent.
- Enums are their short lowercase core values (``"derived"``, ``"exit_nonzero"``).
- Tuples become lists; nested records (a want, a MissingDeps) become nested dicts.
- Input is checked field by field: a wrong type, an unknown enum value or a bad partition
  ref raises ``InvalidInput`` naming the field path; unknown keys are ignored (a newer peer
  may send more), missing keys take the dataclass default or are an error.

Called by the service, the CLI and the cross-graph follower. Must not import generated
protobuf code (``codec.payloads`` owns that), do I/O, or serialise to text itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from databuild.codec.fields import PAYLOAD_TYPES_BY_NAME, PLANS, FieldKind, FieldPlan
from databuild.core.errors import InvalidInput, InvalidPartitionRef
from databuild.core.events import Event, EventPayload, event_type_name
from databuild.core.model import Want
from databuild.core.refs import parse_ref


def _value_to_dict(plan: FieldPlan, value: Any) -> Any:
    kind = plan.kind
    if kind is FieldKind.ENUM:
        return value.value
    if kind is FieldKind.RECORD:
        return _record_to_dict(value)
    if kind is FieldKind.TEXT_TUPLE:
        return list(value)
    if kind is FieldKind.RECORD_TUPLE:
        return [_record_to_dict(v) for v in value]
    return value


def _record_to_dict(record: Any) -> dict[str, Any]:
    return {p.name: _value_to_dict(p, getattr(record, p.name)) for p in PLANS[type(record)]}


def want_to_dict(want: Want) -> dict[str, Any]:
    return _record_to_dict(want)


def payload_to_dict(payload: EventPayload) -> dict[str, Any]:
    return _record_to_dict(payload)


def event_to_dict(event: Event) -> dict[str, Any]:
    type_name = event_type_name(event.payload)
    return {
        "sequence": event.sequence,
        "timestamp": event.timestamp,
        "type": type_name,
        type_name: _record_to_dict(event.payload),
    }


def _text(path: str, value: Any, is_ref: bool) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{path}: must be a string, not {type(value).__name__}")
    if is_ref:
        try:
            return parse_ref(value)
        except InvalidPartitionRef as exc:
            raise InvalidInput(f"{path}: {exc}") from None
    return value


def _items(path: str, value: Any) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise InvalidInput(f"{path}: must be a list, not {type(value).__name__}")
    return list(value)


def _value_from_dict(plan: FieldPlan, path: str, value: Any) -> Any:
    kind = plan.kind
    if kind is FieldKind.TEXT:
        return _text(path, value, plan.is_ref)
    if kind is FieldKind.OPTIONAL_TEXT:
        return None if value is None or value == "" else _text(path, value, plan.is_ref)
    if kind is FieldKind.INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{path}: must be an integer, not {type(value).__name__}")
        return value
    if kind is FieldKind.FLOAT:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"{path}: must be a number, not {type(value).__name__}")
        return float(value)
    if kind is FieldKind.ENUM:
        assert plan.enum is not None
        allowed = [m.value for m in plan.enum]
        if value not in allowed:
            raise InvalidInput(f"{path}: must be one of {', '.join(allowed)}; got {value!r}")
        return plan.enum(value)
    if kind is FieldKind.TEXT_TUPLE:
        items = _items(path, value)
        return tuple(_text(f"{path}[{i}]", v, plan.is_ref) for i, v in enumerate(items))
    record = plan.record
    assert record is not None
    if kind is FieldKind.RECORD:
        return _record_from_dict(record, path, value)
    items = _items(path, value)
    return tuple(_record_from_dict(record, f"{path}[{i}]", v) for i, v in enumerate(items))


def _record_from_dict(record: type, path: str, data: Any) -> Any:
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{path}: must be an object, not {type(data).__name__}")
    kwargs: dict[str, Any] = {}
    for plan in PLANS[record]:
        if plan.name in data:
            kwargs[plan.name] = _value_from_dict(plan, f"{path}.{plan.name}", data[plan.name])
        elif not plan.has_default:
            raise InvalidInput(f"{path}: missing field {plan.name!r}")
    return record(**kwargs)


def want_from_dict(data: Mapping[str, Any]) -> Want:
    want: Want = _record_from_dict(Want, "want", data)
    return want


def payload_from_dict(type_name: str, data: Mapping[str, Any]) -> EventPayload:
    payload_type = PAYLOAD_TYPES_BY_NAME.get(type_name)
    if payload_type is None:
        raise InvalidInput(
            f"unknown event type {type_name!r}; known: {', '.join(sorted(PAYLOAD_TYPES_BY_NAME))}"
        )
    payload: EventPayload = _record_from_dict(payload_type, type_name, data)
    return payload


def event_from_dict(data: Mapping[str, Any]) -> Event:
    """The inverse of ``event_to_dict``; raises InvalidInput naming the first bad field."""
    if not isinstance(data, Mapping):
        raise InvalidInput(f"event: must be an object, not {type(data).__name__}")
    sequence = data.get("sequence")
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 1:
        raise InvalidInput(f"event.sequence: must be a positive integer; got {sequence!r}")
    timestamp = data.get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        raise InvalidInput(f"event.timestamp: must be a number; got {timestamp!r}")
    type_name = data.get("type")
    if not isinstance(type_name, str):
        raise InvalidInput(f"event.type: must be a string; got {type_name!r}")
    if type_name not in data:
        raise InvalidInput(f"event: type is {type_name!r} but there is no {type_name!r} key")
    payload = payload_from_dict(type_name, data[type_name])
    return Event(sequence=sequence, timestamp=float(timestamp), payload=payload)
