"""The per-index caches' LRU: bounded in entries and in summed weight, least recently used out first."""

from __future__ import annotations

import threading

from lorawb_core.bounded_lru import BoundedLru


def test_entries_bound_drops_the_least_recently_used():
    lru = BoundedLru[str, int](entries=3, weight_limit=10**9)
    for k in "abc":
        lru.put(k, ord(k))
    assert lru.get("a") == ord("a")  # a is now the most recent
    lru.put("d", 4)
    assert "b" not in lru and {"a", "c", "d"} == {k for k in "abcd" if k in lru} and len(lru) == 3


def test_weight_bound_keeps_at_least_the_newest_entry():
    lru = BoundedLru[str, list](entries=100, weight_limit=5, weight=len)
    lru.put("x", [1, 2, 3])
    lru.put("y", [1, 2])
    assert len(lru) == 2  # 5 in all: within the limit
    lru.put("z", [1])
    assert "x" not in lru and "y" in lru and "z" in lru
    lru.put("huge", list(range(50)))  # alone over the limit: kept, everything older goes
    assert len(lru) == 1 and lru.get("huge") is not None
    lru.clear()
    lru.put("a", [1, 2, 3, 4, 5])
    assert len(lru) == 1 and lru.get("a") == [1, 2, 3, 4, 5]  # the running total restarted at 0


def test_put_keeps_the_first_value_and_returns_it():
    lru = BoundedLru[str, object](entries=4, weight_limit=100)
    first, second = object(), object()
    assert lru.put("k", first) is first
    assert lru.put("k", second) is first and lru.get("k") is first
    assert lru.get("missing") is None


def test_concurrent_puts_stay_within_the_bounds():
    lru = BoundedLru[int, list](entries=50, weight_limit=200, weight=len)

    def work(offset):
        for i in range(2000):
            lru.put(offset + i, [0] * (i % 7 + 1))
            lru.get(offset + i // 2)

    threads = [threading.Thread(target=work, args=(n * 10_000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= len(lru) <= 50
    assert sum(len(v) for v in lru._items.values()) == lru._total <= 200
