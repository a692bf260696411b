"""Round-trip properties of the codec for every event payload type.

Hypothesis generates payloads of each type (within the ranges the proto fields hold) and
checks that proto bytes, the BuildEvent envelope and JSON dicts all give back equal values.
Called by pytest; touches no storage.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from databuild.codec import (
    PAYLOAD_VERSION,
    decode_event,
    decode_payload,
    encode_event,
    encode_payload,
    event_from_dict,
    event_to_dict,
    payload_from_dict,
    payload_to_dict,
    want_from_dict,
    want_to_dict,
)
from databuild.core import events as ev
from databuild.core.events import PAYLOAD_TYPES, Event, EventPayload, event_type_name
from databuild.core.model import JobRunId, Want, WantId, WantSource
from databuild.core.refs import PartitionRef

UINT64 = st.integers(min_value=0, max_value=2**63 - 1)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
FLOATS = st.floats(allow_nan=False)
TEXT = st.text(max_size=20)
REFS = st.from_regex(r"[a-z]{1,8}(/[a-z_]{1,5}=[0-9a-z-]{1,10}){0,3}", fullmatch=True).map(
    PartitionRef
)
WANT_IDS = st.text(min_size=1, max_size=24).map(WantId)
RUN_IDS = st.text(min_size=1, max_size=12).map(JobRunId)

WANTS = st.builds(
    Want,
    want_id=WANT_IDS,
    root_want_id=WANT_IDS,
    parent_want_id=st.none() | WANT_IDS,
    partition_ref=REFS,
    data_timestamp=UINT64,
    ttl_seconds=UINT64,
    sla_seconds=UINT64,
    source=st.sampled_from(WantSource),
)
MISSING = st.builds(
    ev.MissingDeps, partition_ref=REFS, missing_refs=st.lists(REFS, max_size=4).map(tuple)
)

STRATEGIES: dict[type, st.SearchStrategy[Any]] = {
    ev.WantCreated: st.builds(ev.WantCreated, want=WANTS),
    ev.WantReopened: st.builds(ev.WantReopened, WANT_IDS, st.none() | WANT_IDS),
    ev.WantCanceled: st.builds(ev.WantCanceled, WANT_IDS, TEXT),
    ev.WantExpired: st.builds(ev.WantExpired, WANT_IDS),
    ev.WantSatisfied: st.builds(ev.WantSatisfied, WANT_IDS, st.none() | RUN_IDS),
    ev.WantFailed: st.builds(
        ev.WantFailed, WANT_IDS, st.sampled_from(ev.WantFailureReason), TEXT, st.none() | REFS
    ),
    ev.SlaMissed: st.builds(ev.SlaMissed, WANT_IDS, FLOATS, REFS, TEXT),
    ev.JobRunQueued: st.builds(
        ev.JobRunQueued,
        RUN_IDS,
        TEXT,
        st.lists(REFS, max_size=5).map(tuple),
        st.lists(WANT_IDS, max_size=5).map(tuple),
    ),
    ev.JobRunStarted: st.builds(ev.JobRunStarted, RUN_IDS, INT64),
    ev.JobRunSucceeded: st.builds(ev.JobRunSucceeded, RUN_IDS, FLOATS),
    ev.JobRunFailed: st.builds(
        ev.JobRunFailed, RUN_IDS, st.sampled_from(ev.FailureKind), TEXT, INT32, FLOATS, FLOATS
    ),
    ev.JobRunMissingDeps: st.builds(
        ev.JobRunMissingDeps, RUN_IDS, st.lists(MISSING, max_size=4).map(tuple), FLOATS
    ),
    ev.JobRunCanceled: st.builds(ev.JobRunCanceled, RUN_IDS, TEXT),
    ev.PartitionBuilding: st.builds(ev.PartitionBuilding, REFS, RUN_IDS),
    ev.PartitionLive: st.builds(ev.PartitionLive, REFS, st.none() | RUN_IDS, TEXT),
    ev.PartitionFailed: st.builds(ev.PartitionFailed, REFS, st.none() | RUN_IDS, TEXT, FLOATS),
    ev.PartitionWaiting: st.builds(
        ev.PartitionWaiting, REFS, TEXT, st.lists(REFS, max_size=4).map(tuple)
    ),
    ev.PartitionsInvalidated: st.builds(
        ev.PartitionsInvalidated, st.lists(REFS, max_size=4).map(tuple), TEXT, TEXT
    ),
    ev.ClockStepped: st.builds(ev.ClockStepped, FLOATS),
    ev.ConfigReloaded: st.builds(
        ev.ConfigReloaded,
        TEXT,
        st.lists(TEXT, max_size=3).map(tuple),
        st.lists(TEXT, max_size=3).map(tuple),
        st.lists(TEXT, max_size=3).map(tuple),
    ),
}
PAYLOADS: st.SearchStrategy[EventPayload] = st.one_of(*STRATEGIES.values())
EVENTS = st.builds(Event, sequence=st.integers(1, 2**63 - 1), timestamp=FLOATS, payload=PAYLOADS)


def test_every_payload_type_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(PAYLOAD_TYPES)


@pytest.mark.parametrize("payload_type", PAYLOAD_TYPES, ids=lambda t: t.__name__)
@given(data=st.data())
def test_payload_round_trips_through_proto_and_dicts(
    payload_type: type[EventPayload], data: st.DataObject
) -> None:
    payload = data.draw(STRATEGIES[payload_type])
    type_name, encoded = encode_payload(payload)
    assert type_name == event_type_name(payload)
    assert decode_payload(type_name, encoded, PAYLOAD_VERSION) == payload
    as_dict = payload_to_dict(payload)
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert payload_from_dict(type_name, as_dict) == payload


@given(EVENTS)
def test_event_round_trips_through_envelope_and_dict(event: Event) -> None:
    assert decode_event(encode_event(event)) == event
    as_dict = event_to_dict(event)
    assert set(as_dict) == {"sequence", "timestamp", "type", as_dict["type"]}
    assert event_from_dict(json.loads(json.dumps(as_dict))) == event


@given(WANTS)
def test_want_round_trips_through_dict(want: Want) -> None:
    assert want_from_dict(want_to_dict(want)) == want
