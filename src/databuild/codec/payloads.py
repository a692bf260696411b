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

import operator
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
from databuild.core.pickling import constructor

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


def _enum_member(plan: FieldPlan) -> Callable[[int], StrEnum]:
    enum = plan.enum
    assert enum is not None
    members = {number: member for (kind, number), member in _ENUM_MEMBER.items() if kind is enum}

    def member(number: int) -> StrEnum:
        found = members.get(number)
        if found is None:
            raise StorageError(f"field {plan.name!r} has no known {enum.__name__} {number}")
        return found

    return member


def _absent_as_none(value: str) -> str | None:
    return value or None


def _converter(plan: FieldPlan) -> Callable[[Any], Any] | None:
    """What turns the message's value of this field into the core value (None: as is)."""
    kind = plan.kind
    if kind is FieldKind.OPTIONAL_TEXT:
        return _absent_as_none
    if kind is FieldKind.ENUM:
        return _enum_member(plan)
    if kind is FieldKind.TEXT_TUPLE:
        return tuple
    if kind is FieldKind.RECORD:
        assert plan.record is not None
        return _decoder(plan.record)
    if kind is FieldKind.RECORD_TUPLE:
        assert plan.record is not None
        item = _decoder(plan.record)
        return lambda values: tuple(map(item, values))
    return None


def _decoder(record: type) -> Callable[[Any], Any]:
    """message -> core record, made once per record type from its field plans.

    Reading the log decodes every event of a restart's tail, so this is on the start's
    critical path: the field values are read in one C call (``attrgetter``), only the
    fields that need it are converted, and the record is built positionally by
    ``core.pickling.constructor`` (frozen payloads without their slower frozen ``__init__``).
    """
    plans = PLANS[record]
    make: Callable[..., Any] = constructor(record)
    get = operator.attrgetter(*(p.name for p in plans))
    converts = [(i, c) for i, c in enumerate(map(_converter, plans)) if c is not None]
    if len(plans) == 1:
        convert = converts[0][1] if converts else None
        if convert is None:
            return lambda message: make(get(message))
        return lambda message: make(convert(get(message)))
    if not converts:
        return lambda message: make(*get(message))

    def decode(message: Any) -> Any:
        values = list(get(message))
        for i, convert in converts:
            values[i] = convert(values[i])
        return make(*values)

    return decode


# payload type name -> (its message class, the decoder of that message)
_DECODERS: Mapping[str, tuple[type[Message], Callable[[Any], EventPayload]]] = {
    name: (_MESSAGE_CLASS[payload_type], _decoder(payload_type))
    for name, payload_type in PAYLOAD_TYPES_BY_NAME.items()
}


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
    decoder = _DECODERS.get(type_name)
    if decoder is None:
        raise StorageError(f"unknown event type {type_name!r}")
    message_class, decode = decoder
    try:
        return decode(message_class.FromString(data))
    except (DecodeError, TypeError, ValueError) as exc:
        raise StorageError(f"cannot decode {type_name} event: {exc}") from exc


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
