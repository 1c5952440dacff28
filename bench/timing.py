"""The timing rule every bench shares: best of N (with the median beside it), wall clock."""

from __future__ import annotations

import statistics
import time


def best(fn, runs: int) -> tuple[float, float]:
    """(best, median) seconds of ``runs`` calls of ``fn``."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)
