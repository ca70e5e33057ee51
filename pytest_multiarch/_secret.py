"""A value that must never be printed: a password, a token, a credential helper's answer.

``repr``, ``str`` and ``format`` show ``<redacted>``; only :meth:`Secret.reveal` gives the value,
at the one place that puts it on the wire.  Holding secrets in this type (rather than ``str``)
keeps them out of ``pytest -l`` locals, dataclass reprs, log records and exception messages.
"""

from __future__ import annotations

from typing import Any, final

__all__ = ["Secret"]


@final
class Secret:
    """A string whose ``repr``/``str`` are masked; compare and hash by value, never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str | Secret) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        self._value = str(value)

    def reveal(self) -> str:
        """The value itself: only for the header or request body that carries it."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    def __str__(self) -> str:
        return "<redacted>"

    def __format__(self, spec: str) -> str:
        return "<redacted>"

    def __reduce__(self) -> str | tuple[Any, ...]:
        # Pickling (xdist, multiprocessing) would carry the value to where it is not masked.
        raise TypeError("a Secret cannot be pickled")
