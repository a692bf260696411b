"""Core event payloads <-> protobuf bytes, and whole events <-> the BuildEvent envelope.

The Build Event Log stores each event as (type name, payload version, payload bytes); the
bytes are the payload's own proto message (``WantCreated``, ``JobRunFailed``, ...), not the
envelope, so a row needs no second copy of its sequence and timestamp. ``encode_event`` /
``decode_event`` give the whole ``BuildEvent`` envelope for anything that ships events as
one blob.

Conventions:
- An optional id (``WantId | None``) is ``""`` in proto, so ``""`` and ``None`` are the same
  on the wire and decode to ``None``.
- Enums are proto numbers matched by member name; ``*_UNSPECIFIED`` or an unknown number in
  stored bytes is an error, never silently a default.
- Errors: encoding something the schema cannot hold (an int out of range, a non-payload,
  text with a lone surrogate) raises ``InvalidInput`` and nothing is half-written; bytes that
  do not decode raise ``StorageError`` (they came from storage or a peer and are damaged).

Versions and upgrades: every stored payload carries ``PAYLOAD_VERSION`` as of its writing.
When a payload message changes incompatibly, bump ``PAYLOAD_VERSION`` to N+1 and register
``_UPGRADES[N] = fn`` where ``fn(type_name, data) -> (type_name, data)`` rewrites bytes of
version N into bytes of version N+1 (it may rename the type or reshape fields, parsing the
old bytes with a copy of the old message or as raw fields). ``decode_payload`` runs the
chain from the stored version up to the current one before converting, so every reader
sees only current payloads. Version 1 is the first; there is nothing to upgrade yet.

Called by the log adapters (``databuild.log``) and by anything that ships events. This is
one of the only modules that imports generated code; it must not do I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from google.protobuf.message import DecodeError, EncodeError, Message

from databuild.codec.fields import (
    PAYLOAD_TYPES_BY_NAME,
    PLANS,
    RECORD_TYPES,
    FieldKind,
    FieldPlan,
    check_message_fields,
    enum_numbers,
)
from databuild.codec.gen import databuild_pb2 as pb
from databuild.core.errors import InvalidInput, StorageError
from databuild.core.events import Event, EventPayload, event_type_name
from databuild.core.model import Want

PAYLOAD_VERSION = 1

Upgrade = Callable[[str, bytes], tuple[str, bytes]]
# version N -> function turning version-N (type name, bytes) into version N+1. Empty: v1 only.
_UPGRADES: dict[int, Upgrade] = {}

_MESSAGE_CLASS: Mapping[type, type[Message]] = {
    r: getattr(pb, "PartitionWant" if r is Want else r.__name__) for r in RECORD_TYPES
}


def _check_oneof_names() -> None:
    """The BuildEvent oneof must name each payload message as core names its type."""
    fields: Any = pb.BuildEvent.DESCRIPTOR.oneofs_by_name["payload"].fields
    oneof = {f.name: f.message_type.name for f in fields}
    ours = {name: t.__name__ for name, t in PAYLOAD_TYPES_BY_NAME.items()}
    if oneof != ours:
        raise TypeError(f"proto BuildEvent.payload and core event types differ: {oneof}")


_check_oneof_names()


def _enum_tables() -> tuple[dict[StrEnum, int], dict[tuple[type, int], StrEnum]]:
    to_number: dict[StrEnum, int] = {}
    from_number: dict[tuple[type, int], StrEnum] = {}
    for record, plans in PLANS.items():
        descriptor = _MESSAGE_CLASS[record].DESCRIPTOR
        check_message_fields(record, descriptor)
        for plan in plans:
            if plan.enum is not None:
                numbers = enum_numbers(plan.enum, descriptor.fields_by_name[plan.name].enum_type)
                to_number.update(numbers)
                from_number.update({(plan.enum, n): m for m, n in numbers.items()})
    return to_number, from_number


_ENUM_NUMBER, _ENUM_MEMBER = _enum_tables()


def _value_to_proto(plan: FieldPlan, value: Any) -> Any:
    kind = plan.kind
    if kind is FieldKind.OPTIONAL_TEXT:
        return "" if value is None else value
    if kind is FieldKind.ENUM:
        return _ENUM_NUMBER[value]
    if kind is FieldKind.RECORD:
        return _to_message(value)
    if kind is FieldKind.TEXT_TUPLE:
        return list(value)
    if kind is FieldKind.RECORD_TUPLE:
        return [_to_message(v) for v in value]
    return value


def _to_message(record: Any) -> Message:
    plans = PLANS[type(record)]
    kwargs = {p.name: _value_to_proto(p, getattr(record, p.name)) for p in plans}
    return _MESSAGE_CLASS[type(record)](**kwargs)


def _value_from_proto(plan: FieldPlan, value: Any) -> Any:
    kind = plan.kind
    if kind is FieldKind.OPTIONAL_TEXT:
        return value or None
    if kind is FieldKind.ENUM:
        assert plan.enum is not None
        member = _ENUM_MEMBER.get((plan.enum, value))
        if member is None:
            raise StorageError(f"field {plan.name!r} has no known {plan.enum.__name__} {value}")
        return member
    if kind is FieldKind.RECORD:
        assert plan.record is not None
        return _from_message(plan.record, value)
    if kind is FieldKind.TEXT_TUPLE:
        return tuple(value)
    if kind is FieldKind.RECORD_TUPLE:
        record = plan.record
        assert record is not None
        return tuple(_from_message(record, v) for v in value)
    return value


def _from_message(record: type, message: Any) -> Any:
    return record(**{p.name: _value_from_proto(p, getattr(message, p.name)) for p in PLANS[record]})


def encode_payload(payload: EventPayload) -> tuple[str, bytes]:
    """(event type name, serialized payload message) at ``PAYLOAD_VERSION``."""
    if type(payload) not in PAYLOAD_TYPES_BY_NAME.values():
        raise InvalidInput(f"not an event payload: {type(payload).__name__}")
    type_name = event_type_name(payload)
    try:
        return type_name, _to_message(payload).SerializeToString()
    except (TypeError, ValueError, KeyError, EncodeError) as exc:
        raise InvalidInput(f"cannot encode {type_name} event: {exc}") from exc


def decode_payload(type_name: str, data: bytes, version: int) -> EventPayload:
    """The payload stored as (type name, bytes) at ``version``, upgraded to the current one."""
    if not 1 <= version <= PAYLOAD_VERSION:
        raise StorageError(
            f"{type_name} event has payload version {version}; this DataBuild reads versions "
            f"1 to {PAYLOAD_VERSION} (was it written by a newer DataBuild?)"
        )
    while version < PAYLOAD_VERSION:
        type_name, data = _UPGRADES[version](type_name, data)
        version += 1
    payload_type = PAYLOAD_TYPES_BY_NAME.get(type_name)
    if payload_type is None:
        raise StorageError(f"unknown event type {type_name!r}")
    message = _MESSAGE_CLASS[payload_type]()
    try:
        message.ParseFromString(data)
        payload: EventPayload = _from_message(payload_type, message)
    except (DecodeError, TypeError, ValueError) as exc:
        raise StorageError(f"cannot decode {type_name} event: {exc}") from exc
    return payload


def encode_event(event: Event) -> bytes:
    """The event as a serialized ``BuildEvent`` envelope."""
    type_name, data = encode_payload(event.payload)
    try:
        envelope = pb.BuildEvent(
            sequence=event.sequence, timestamp=event.timestamp, version=PAYLOAD_VERSION
        )
        getattr(envelope, type_name).MergeFromString(data)
        return envelope.SerializeToString()
    except (TypeError, ValueError, EncodeError) as exc:
        raise InvalidInput(f"cannot encode event {event.sequence}: {exc}") from exc


def decode_event(data: bytes) -> Event:
    """The event in a serialized ``BuildEvent`` envelope (its payload upgraded if older)."""
    envelope = pb.BuildEvent()
    try:
        envelope.ParseFromString(data)
    except DecodeError as exc:
        raise StorageError(f"cannot decode a BuildEvent: {exc}") from exc
    type_name = envelope.WhichOneof("payload")
    if type_name is None:
        raise StorageError(f"BuildEvent {envelope.sequence} has no payload")
    payload_bytes = getattr(envelope, type_name).SerializeToString()
    payload = decode_payload(type_name, payload_bytes, envelope.version)
    return Event(sequence=envelope.sequence, timestamp=envelope.timestamp, payload=payload)
