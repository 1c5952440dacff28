"""What running jobs reports, shared by the built-in dispatcher and the Ray backend: the progress event, the run
summary, the retry backoff and the file name of a result."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

BACKOFF_S = (1.0, 3.0, 10.0, 30.0)
"""Seconds before the 1st, 2nd, 3rd … retry of a job that hit a 5xx, a broken answer or a time-out."""


@dataclass(frozen=True)
class JobEvent:
    """What the ``progress`` callback receives: a job changed state, or a running job reported sampler progress."""

    job_id: int
    batch_id: int
    key: str
    state: str
    server: str | None = None
    value: int | None = None
    max: int | None = None
    error: str | None = None
    images: tuple[str, ...] = ()


@dataclass
class RunSummary:
    """What one run of the queue did; ``left`` counts jobs still queued or in flight when it stopped."""

    done: int = 0
    failed: int = 0
    requeued: int = 0
    recovered: int = 0
    left: int = 0
    stopped: bool = False
    per_server: dict[str, int] = field(default_factory=dict)


def backoff_delay(attempts: int, backoff: tuple[float, ...] = BACKOFF_S) -> float:
    """The wait before retrying a job that has used ``attempts`` attempts."""
    return backoff[min(attempts, len(backoff)) - 1] if attempts > 0 and backoff else 0.0


def file_stem(key: str) -> str:
    """A file name for an item key: safe characters kept, the rest ``_``, plus a short hash when anything changed."""
    stem = re.sub(r"[^A-Za-z0-9._=+-]+", "_", key).strip("._") or "item"
    if stem != key:
        stem = f"{stem[:80]}-{hashlib.sha1(key.encode()).hexdigest()[:6]}"
    return stem
