"""The codec's documented conventions and its errors on bad input.

Checks the JSON shape (proto field names, short enum values, null for absent ids) and that
bad bytes, versions and dicts raise our own errors with a message that names the problem.
Called by pytest; touches no storage.
"""

from __future__ import annotations

import pytest

from databuild.codec import (
    PAYLOAD_VERSION,
    decode_event,
    decode_payload,
    encode_event,
    encode_payload,
    event_from_dict,
    event_to_dict,
    payload_from_dict,
)
from databuild.core.errors import InvalidInput, StorageError
from databuild.core.events import (
    Event,
    FailureKind,
    JobRunFailed,
    JobRunStarted,
    PartitionLive,
    WantCreated,
    WantExpired,
)
from databuild.core.model import JobRunId, Want, WantId, WantSource
from databuild.core.refs import PartitionRef

WANT = Want(
    want_id=WantId("w1"),
    root_want_id=WantId("w1"),
    parent_want_id=None,
    partition_ref=PartitionRef("daily/date=2024-01-01"),
    data_timestamp=1704067200,
    ttl_seconds=0,
    sla_seconds=3600,
    source=WantSource.DERIVED,
)


def test_event_dict_uses_proto_names_short_enums_and_null_for_absent_ids() -> None:
    event = Event(7, 12.5, WantCreated(WANT))
    assert event_to_dict(event) == {
        "sequence": 7,
        "timestamp": 12.5,
        "type": "want_created",
        "want_created": {
            "want": {
                "want_id": "w1",
                "root_want_id": "w1",
                "parent_want_id": None,
                "partition_ref": "daily/date=2024-01-01",
                "data_timestamp": 1704067200,
                "ttl_seconds": 0,
                "sla_seconds": 3600,
                "source": "derived",
            }
        },
    }
    failed = JobRunFailed(JobRunId("r1"), FailureKind.EXIT_NONZERO, "boom", 2, 1.0, 0.0)
    assert event_to_dict(Event(1, 0.0, failed))["job_run_failed"]["kind"] == "exit_nonzero"


def test_empty_id_on_the_wire_or_in_a_dict_means_absent() -> None:
    live = payload_from_dict("partition_live", {"partition_ref": "a/b", "job_run_id": ""})
    assert live == PartitionLive(PartitionRef("a/b"), None, "")
    assert decode_payload(*encode_payload(PartitionLive(PartitionRef("a/b"), None)), 1) == live


def test_encoding_a_value_the_schema_cannot_hold_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="job_run_started"):
        encode_payload(JobRunStarted(JobRunId("r1"), 2**70))
    with pytest.raises(InvalidInput, match="want_expired"):
        encode_payload(WantExpired(WantId("\udc00")))
    with pytest.raises(InvalidInput, match="not an event payload"):
        encode_payload(WANT)  # type: ignore[arg-type]


def test_damaged_bytes_unknown_types_and_versions_are_storage_errors() -> None:
    type_name, data = encode_payload(WantExpired(WantId("w1")))
    with pytest.raises(StorageError, match="cannot decode want_expired"):
        decode_payload(type_name, b"\xff\xff\xff", PAYLOAD_VERSION)
    with pytest.raises(StorageError, match="unknown event type 'nope'"):
        decode_payload("nope", data, PAYLOAD_VERSION)
    with pytest.raises(StorageError, match="newer DataBuild"):
        decode_payload(type_name, data, PAYLOAD_VERSION + 1)
    with pytest.raises(StorageError, match="no payload"):
        decode_event(b"\x08\x05")  # a BuildEvent with only sequence=5
    with pytest.raises(StorageError, match="FailureKind 0"):
        decode_payload("job_run_failed", b"", PAYLOAD_VERSION)  # kind left UNSPECIFIED


def test_envelope_carries_sequence_and_timestamp() -> None:
    event = Event(42, 99.25, WantExpired(WantId("w1")))
    assert decode_event(encode_event(event)) == event


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"sequence": 0, "timestamp": 1.0, "type": "want_expired"}, "event.sequence"),
        ({"sequence": 1, "timestamp": "x", "type": "want_expired"}, "event.timestamp"),
        ({"sequence": 1, "timestamp": 1.0, "type": "want_expired"}, "no 'want_expired' key"),
        ({"sequence": 1, "timestamp": 1, "type": "bogus", "bogus": {}}, "unknown event type"),
        (
            {"sequence": 1, "timestamp": 1, "type": "want_expired", "want_expired": {}},
            "missing field 'want_id'",
        ),
        (
            {
                "sequence": 1,
                "timestamp": 1,
                "type": "job_run_started",
                "job_run_started": {"job_run_id": "r", "pid": True},
            },
            "job_run_started.pid: must be an integer",
        ),
        (
            {
                "sequence": 1,
                "timestamp": 1,
                "type": "partition_building",
                "partition_building": {"partition_ref": "../etc", "job_run_id": "r"},
            },
            "partition_building.partition_ref: invalid partition ref",
        ),
        (
            {
                "sequence": 1,
                "timestamp": 1,
                "type": "job_run_failed",
                "job_run_failed": {
                    "job_run_id": "r",
                    "kind": "EXIT_NONZERO",
                    "message": "",
                    "exit_code": 1,
                    "duration_seconds": 0,
                    "retry_at": 0,
                },
            },
            "job_run_failed.kind: must be one of exit_nonzero",
        ),
    ],
)
def test_bad_event_dicts_name_the_field(data: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem.replace("(", r"\(")):
        event_from_dict(data)
