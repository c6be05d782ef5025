"""Classes a program may define that trip code which looks a value's type up in a set."""

from __future__ import annotations


class HashlessMeta(type):
    """A metaclass with ``__eq__`` and no ``__hash__``: Python makes the classes it creates
    unhashable, so ``type(value) in some_set`` raises ``TypeError`` for their instances."""

    def __eq__(cls, other: object) -> bool:
        return cls is other

    __hash__ = None  # type: ignore[assignment]  # what defining __eq__ alone implies


class Hashless(metaclass=HashlessMeta):
    """An ordinary object of such a class, whose ``str()`` is ``"hashless"``."""

    def __str__(self) -> str:
        return "hashless"
