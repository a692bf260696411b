"""Positional pickling for the dataclasses the state snapshot is made of.

A snapshot (``runtime.snapshots``) pickles the folded ``BuildState``: millions of records,
wants and missing-deps values. By default a slotted dataclass pickles as "make an empty
object, then set each slot from a dict" (a dict per object), and a frozen one restores
itself through ``dataclasses``' Python-level ``__setstate__``, which looks up ``fields()``
for every object. ``positional_pickle`` makes a class pickle as ``cls(*field_values)``
instead: the unpickler calls the generated ``__init__`` straight from C, which halves the
time to load a snapshot and makes the file a third smaller. ``positional_state`` gives the
same pair to a pickler that wants to rewrite the values (the snapshot writer shares equal
strings).

Used by ``core.model``, ``core.events`` and ``core.state`` on their classes; the fields are
read from ``dataclasses.fields`` so that a new field can never be left out of a snapshot.
Pure: no I/O.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

_T = TypeVar("_T")

# class -> the values of its fields, in order, as a tuple
_FIELD_VALUES: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def positional_pickle(cls: type[_T]) -> type[_T]:
    """Class decorator (put it above ``@dataclass``): pickle as ``cls(*fields)``.

    Only for dataclasses whose ``__init__`` takes every field, in order, and does nothing
    else (no ``__post_init__`` checks that would reject a value already accepted once)."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    values: Callable[[Any], tuple[Any, ...]]
    if len(names) == 1:
        single = operator.attrgetter(names[0])
        values = lambda obj: (single(obj),)  # noqa: E731  (attrgetter of one name: no tuple)
    else:
        values = operator.attrgetter(*names)
    _FIELD_VALUES[cls] = values

    def __reduce__(self: Any) -> tuple[type[_T], tuple[Any, ...]]:
        return (cls, values(self))

    cls.__reduce__ = __reduce__  # type: ignore[method-assign]
    return cls


def positional_state(obj: object) -> tuple[type, tuple[Any, ...]] | None:
    """``(cls, field values)`` if ``obj``'s class pickles positionally, else None."""
    values = _FIELD_VALUES.get(type(obj))
    return None if values is None else (type(obj), values(obj))
