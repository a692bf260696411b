"""``core.pickling``: values built by ``constructor`` or read back from a pickle are the
same values as the classes' own constructors give: equal, of the same class, and a frozen
one stays frozen and hashable."""

from __future__ import annotations

import pickle
from dataclasses import FrozenInstanceError, fields

import pytest

from databuild.core.events import Event, MissingDeps, WantExpired
from databuild.core.lifecycle import JobRunStatus
from databuild.core.model import JobRunId, Want, WantId, WantSource, WantStatus
from databuild.core.pickling import constructor, field_values
from databuild.core.refs import PartitionRef
from databuild.core.state import JobRunRecord, PartitionRecord, WantRecord

WANT_VALUES = (
    WantId("w1"),
    WantId("w0"),
    None,
    PartitionRef("daily/day=1"),
    1_700_000_000,
    0,
    3_600,
    WantSource.API,
)


@pytest.mark.parametrize(
    ("cls", "values"),
    [
        (Want, WANT_VALUES),
        (MissingDeps, (PartitionRef("a/1"), (PartitionRef("b/1"),))),
        (WantExpired, (WantId("w1"),)),
        (Event, (7, 1.5, WantExpired(WantId("w1")))),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_a_frozen_value_built_by_constructor_is_the_same_frozen_value(
    cls: type, values: tuple[object, ...]
) -> None:
    built: object = constructor(cls)(*values)
    expected = cls(*values)
    names = [f.name for f in fields(expected)]
    assert type(built) is cls
    assert built == expected and hash(built) == hash(expected)
    assert [getattr(built, name) for name in names] == list(values)
    with pytest.raises(FrozenInstanceError):
        setattr(built, names[0], None)


def test_a_mutable_record_is_built_by_its_own_class() -> None:
    assert constructor(WantRecord) is WantRecord
    assert constructor(PartitionRecord) is PartitionRecord


def test_positional_classes_round_trip_through_pickle() -> None:
    want = Want(*WANT_VALUES)
    record = WantRecord(want, WantStatus.PENDING, 1.0, 2.0, children=[WantId("w2")])
    run = JobRunRecord(
        JobRunId("r1"),
        "job",
        (PartitionRef("a/1"),),
        (WantId("w1"),),
        JobRunStatus.MISSING_DEPS,
        1.0,
        missing=(MissingDeps(PartitionRef("a/1"), (PartitionRef("b/1"),)),),
    )
    for value in (want, record, run, run.missing[0]):
        values = field_values(type(value))
        assert values is not None
        copy = pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        assert type(copy) is type(value) and copy == value
        assert values(copy) == values(value)
    assert field_values(Event) is None  # not pickled positionally: no field_values
