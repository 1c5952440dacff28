"""A thread-safe least-recently-used map bounded both in entries and in a total weight (e.g. the modules or tensors
its values hold), so a per-index cache stays small whatever the library holds."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedLru(Generic[K, V]):
    """At most ``entries`` values and, beyond the newest one, at most ``weight_limit`` in ``weight(value)`` summed;
    the least recently used go first."""

    def __init__(self, entries: int, weight_limit: int, weight: Callable[[V], int] = lambda _value: 1) -> None:
        self.entries, self.weight_limit, self._weight = entries, weight_limit, weight
        self._items: OrderedDict[K, V] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> V:
        """Keep ``value`` under ``key`` unless a value is there already; returns the value kept."""
        with self._lock:
            kept = self._items.get(key)
            if kept is not None:
                return kept
            self._items[key] = value
            self._total += self._weight(value)
            while len(self._items) > self.entries or (self._total > self.weight_limit and len(self._items) > 1):
                self._total -= self._weight(self._items.popitem(last=False)[1])
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._total = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items
