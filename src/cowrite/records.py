"""``record``: an immutable value type that is cheap to build.

For the types made once or more per message (protocol events, operations,
append requests and results).  A ``@dataclass(frozen=True)`` sets each field
through ``object.__setattr__`` in its ``__init__``: 1.8 us for six fields on
the 2-core machine of docs/PERFORMANCE.md, against 0.24 us for the same class
without ``frozen``, and a few of them are built per edit.  A record is a
slotted dataclass without ``frozen`` at run time (equal by value and hashable,
as a frozen one), and frozen for the type checker (PEP 681's
``frozen_default``): mypy refuses an assignment to a field, so the code
treats records as the immutable values they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True)
def record(cls: type[_T]) -> type[_T]:
    """Make ``cls`` a record (see the module docstring)."""
    return dataclass(slots=True, unsafe_hash=True)(cls)
