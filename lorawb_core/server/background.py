"""Background jobs of the routes (a merge, an organize run): one thread each, its state in a dict the status route
reads, progress and failure sent as events. Shared by :mod:`.merge_routes` and :mod:`.organize_routes`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("lorawb")


class BackgroundJobs:
    """The jobs of one kind (``kind`` names their events: ``lorawb.<kind>_progress`` / ``_error``)."""

    def __init__(self, kind: str, what: str) -> None:
        self.kind = kind
        self.what = what  # "the merge", "organize": the start of a failure message
        self.jobs: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def status(self, job: str) -> dict[str, Any]:
        """A copy of the job's state, or the 400 that names it (jobs live until the server restarts)."""
        from .http import BadRequest

        with self.lock:
            status = self.jobs.get(job)
        if status is None:
            raise BadRequest(f"no {self.kind} job {job!r} (jobs are kept until the server restarts).", field="job_id")
        return dict(status)

    def progress(self, service, job: str, detail: str, *, keep_detail: bool = False) -> Callable[[int, int, str], None]:
        """A ``progress(done, total, item)`` callback: the job's counts (and ``detail`` with ``keep_detail``)
        updated at once, an event at most every 0.2 s (the last step always)."""
        last = [0.0]

        def progress(done: int, total: int, item: str) -> None:
            with self.lock:
                self.jobs[job].update(done=done, total=total, **({detail: item} if keep_detail else {}))
            now = time.monotonic()
            if done == total or now - last[0] >= 0.2:
                last[0] = now
                service._send(f"lorawb.{self.kind}_progress", {"job": job, "done": done, "total": total, detail: item})

        return progress

    def failed(self, service, job: str, exc: BaseException) -> None:
        """Record a failure as data (our errors by their message, others logged with the traceback) and send it."""
        from ..errors import LorawbError

        if isinstance(exc, LorawbError):
            message = str(exc)
        else:
            log.exception("lorawb: %s failed", self.what)
            message = f"{self.what} failed ({type(exc).__name__}: {exc}); see the server log."
        with self.lock:
            self.jobs[job].update(state="error", error=message, type=type(exc).__name__, finished_at=time.time())
        service._send(f"lorawb.{self.kind}_error", {"job": job, "type": type(exc).__name__, "message": message})
