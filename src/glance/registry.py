"""A small generic registry with helpful unknown-name errors."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from glance.exceptions import UnknownNameError

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """Maps names to objects (classes, factories, presets).

    Parameters
    ----------
    kind
        What the registry holds, used in error messages ("preset", "classifier architecture").
    base
        Optional class every registered class must subclass.

    Examples
    --------
    >>> METRICS = Registry("metric")
    >>> @METRICS.register("double")
    ... def double(x):
    ...     return 2 * x
    >>> METRICS.get("double")(3)
    6
    """

    def __init__(self, kind: str, base: type | None = None) -> None:
        self.kind = kind
        self.base = base
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; without ``obj`` return a decorator."""

        def _add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if self.base is not None and isinstance(item, type) and not issubclass(item, self.base):
                raise TypeError(f"{self.kind} {name!r} must subclass {self.base.__name__}")
            self._items[name] = item
            return item

        return _add(obj) if obj is not None else _add

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; raise :class:`UnknownNameError` if absent."""
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), self._items, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; "
                f"valid names: {', '.join(sorted(self._items))}.{hint}"
            ) from None

    def names(self) -> list[str]:
        """Sorted list of the registered names."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
