"""PartitionFailed.retry_at (issue 16: one output of a batch backs off on its own) is a new
proto field: bytes written before it existed decode as before (failed for good), and a log
holding such bytes replays."""

from __future__ import annotations

from databuild.codec import (
    PAYLOAD_VERSION,
    decode_payload,
    encode_payload,
    event_from_dict,
    event_to_dict,
)
from databuild.codec.gen import databuild_pb2 as pb
from databuild.core import events as ev
from databuild.core.model import JobRunId
from databuild.core.refs import PartitionRef

REF = PartitionRef("trips/region=north")
RUN = JobRunId("r00000001")


def test_old_bytes_without_retry_at_decode_as_failed_for_good() -> None:
    old = pb.PartitionFailed(partition_ref=REF, job_run_id=RUN, message="gone")
    payload = decode_payload("partition_failed", old.SerializeToString(), 1)
    assert payload == ev.PartitionFailed(REF, RUN, "gone")
    assert isinstance(payload, ev.PartitionFailed) and payload.retry_at == 0.0


def test_retry_at_round_trips_and_is_absent_from_old_style_bytes() -> None:
    backoff = ev.PartitionFailed(REF, RUN, "busy", retry_at=1_700_000_000.5)
    name, data = encode_payload(backoff)
    assert decode_payload(name, data, PAYLOAD_VERSION) == backoff
    # a partition failed for good encodes exactly as before the field existed
    assert encode_payload(ev.PartitionFailed(REF, RUN, "gone"))[1] == (
        pb.PartitionFailed(partition_ref=REF, job_run_id=RUN, message="gone").SerializeToString()
    )


def test_a_json_event_without_retry_at_reads_as_before() -> None:
    event = ev.Event(7, 1.0, ev.PartitionFailed(REF, RUN, "gone"))
    data = event_to_dict(event)
    assert data["partition_failed"]["retry_at"] == 0.0
    del data["partition_failed"]["retry_at"]  # as a peer on an older version sends it
    assert event_from_dict(data) == event
