"""One registry pattern for every pluggable component (attacks, objectives, strategies, datasets).

Register by name, create by name, list by name::

    OBJECTIVES = Registry("attack objective")

    @OBJECTIVES.register("ce")
    class CrossEntropy: ...

    OBJECTIVES.get("ce")        # the class
    OBJECTIVES.names()          # ["ce", ...]

Components are chosen by registry key only, never by string tests on model names.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from mmt_ard.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object map with helpful errors for unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name`` (names are unique)."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """The object registered as ``name``; a :class:`UserError` listing the choices otherwise."""
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}.{hint}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
