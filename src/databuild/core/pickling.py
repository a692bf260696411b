"""Positional pickling and fast construction for the dataclasses the state snapshot holds.

A snapshot (``runtime.snapshots``) pickles the folded ``BuildState``: millions of records,
wants and missing-deps values. By default a slotted dataclass pickles as "make an empty
object, then set each slot from a dict" (a dict per object), and a frozen one restores
itself through ``dataclasses``' Python-level ``__setstate__``, which looks up ``fields()``
for every object. ``positional_pickle`` makes a class pickle as "build it from its field
values, in order" instead, which halves the time to load a snapshot and makes the file a
third smaller. ``positional_state`` gives the same pair to a pickler that wants to rewrite
the values (the snapshot writer shares equal strings).

``constructor(cls)`` is how such values are built again, here and by the codec's decoders:
the class itself for a mutable dataclass, and for a frozen one a builder that skips the
frozen ``__init__``. That ``__init__`` sets every field through ``object.__setattr__`` (the
frozen class's own ``__setattr__`` refuses), a call per field that makes building a
``Want`` three times slower than building a mutable record of the same size; restoring
millions of them was a large part of a service's start. The builder runs the ``__init__``
of a mutable twin with the same slots and then gives the object its real class (CPython
allows the switch exactly when the two layouts are the same, which is checked once, here):
the result is an ordinary instance of the frozen class, equal field by field.

Used by ``core.model``, ``core.events`` and ``core.state`` on their classes, by the codec
and the snapshot store; the fields are read from ``dataclasses.fields`` so that a new field
can never be left out of a snapshot. Pure: no I/O.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import fields, make_dataclass
from typing import Any, TypeVar

_T = TypeVar("_T")

# class -> the values of its fields, in order, as a tuple
_FIELD_VALUES: dict[type, Callable[[Any], tuple[Any, ...]]] = {}
# frozen class -> its mutable twin (same slots, same order); see ``constructor``
_TWINS: dict[type, type] = {}
_BUILDERS: dict[type, Callable[..., Any]] = {}


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

    if constructor(cls) is cls:

        def __reduce__(self: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
            return (cls, values(self))

    else:

        def __reduce__(self: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
            return (restore_frozen, (cls, *values(self)))

    cls.__reduce__ = __reduce__  # type: ignore[method-assign]
    return cls


def positional_state(obj: object) -> tuple[Callable[..., Any], tuple[Any, ...]] | None:
    """``(callable, arguments)`` rebuilding ``obj`` if its class pickles positionally
    (``obj.__reduce__()``, with ``arguments`` ending in its field values), else None."""
    if type(obj) not in _FIELD_VALUES:
        return None
    reduced: tuple[Callable[..., Any], tuple[Any, ...]] = obj.__reduce__()  # type: ignore[assignment]
    return reduced


def field_values(cls: type) -> Callable[[Any], tuple[Any, ...]] | None:
    """For a class that pickles positionally, the function giving an instance's field
    values in order (what ``constructor(cls)`` takes back); else None."""
    return _FIELD_VALUES.get(cls)


def restore_frozen(cls: type[_T], *values: Any) -> _T:
    """What a frozen positional class unpickles through: ``constructor(cls)(*values)``."""
    obj = _TWINS[cls](*values)
    obj.__class__ = cls
    return obj  # type: ignore[no-any-return]


def constructor(cls: type[_T]) -> Callable[..., _T]:
    """A callable taking ``cls``'s field values in order (as its ``__init__`` does) and
    returning the instance: ``cls`` itself unless it is a frozen slotted dataclass without
    a ``__post_init__``, then the faster builder described in the module docstring."""
    built = _BUILDERS.get(cls)
    if built is not None:
        return built
    builder: Callable[..., Any] = cls
    params = getattr(cls, "__dataclass_params__", None)
    if (
        params is not None
        and params.frozen
        and "__slots__" in cls.__dict__
        and not hasattr(cls, "__post_init__")
        and cls.__bases__ == (object,)
    ):
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        twin: type = make_dataclass(f"_Mutable{cls.__name__}", names, slots=True)
        try:  # the layouts must match for the class switch; else keep the plain __init__
            probe: Any = object.__new__(twin)
            probe.__class__ = cls
        except TypeError:
            pass
        else:
            _TWINS[cls] = twin

            def builder(*values: Any) -> Any:
                obj = twin(*values)
                obj.__class__ = cls
                return obj

    _BUILDERS[cls] = builder
    return builder
