"""The batch queue: store a :class:`~lorawb_core.batch.work.BatchPlan`, run it on ComfyUI servers, read the results.

>>> q = BatchQueue("/data/lorawb/library.sqlite3", results_dir="/data/lorawb/batches")      # doctest: +SKIP
>>> batch_id = q.submit(plan)                      # the plan's items become queued jobs
>>> q.run(batch_id, servers=["http://127.0.0.1:8188"], progress=print)   # blocks until the batch is finished
RunSummary(done=9, failed=0, ...)
>>> q.results(batch_id)                            # one ItemResult per item, in the plan's order
[ItemResult(key='x=0|y=ALL', images=(PosixPath('/data/lorawb/batches/3/x=0_y=ALL-1a2b3c.png'),), ...), ...]

* ``BatchQueue(db)``: ``db`` is a library database path (None: the default library), or a
  :class:`~lorawb_core.service.LibraryService` (its database and its events).
* ``submit(plan, results_dir=None) -> batch_id``; images go to ``<results_dir>/<batch_id>/<key>.png``.
* ``run(batch_id=None, servers=None, *, progress=None, stop=None, in_flight=None, backend=None) -> RunSummary``:
  runs queued jobs (of one batch, or all) until none is left or ``stop`` (a ``threading.Event``) is set; safe to
  call again after a crash (jobs already on a server are followed, not sent twice). ``servers`` and the rest default
  to :func:`lorawb_core.batch.servers.queue_settings`. ``progress`` gets a
  :class:`~lorawb_core.batch.outcome.JobEvent` per change. No server answering raises
  :class:`~lorawb_core.errors.ServerUnreachable` (the jobs stay queued).
* ``results(batch_id) -> list[ItemResult]``; ``batch(id)``, ``batches()``, ``jobs(batch_id, states)``, ``job(id)``.
* ``cancel(batch_id=None, job_ids=()) -> list[Job]``: queued jobs are cancelled, in-flight ones are deleted from the
  server's queue or interrupted; ``retry(batch_id=None, job_ids=()) -> int`` requeues failed and cancelled jobs.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from ..errors import ComfyServerError
from . import jobs as J
from .dispatch import Dispatcher
from .outcome import JobEvent, RunSummary
from .servers import queue_settings
from .work import BatchPlan, ItemResult


class BatchQueue:
    def __init__(self, db: Any = None, results_dir: str | os.PathLike[str] | None = None) -> None:
        from ..library.config import default_db_path

        self.service = db if hasattr(db, "with_db") else None
        self.db_path = Path(self.service.db_path if self.service else (db or default_db_path()))
        self.results_dir = Path(results_dir) if results_dir else self.db_path.parent / "batches"
        self._local = threading.local()

    # ---- database ---------------------------------------------------------------------------------------------
    def _open(self):
        from ..library.db import open_library

        return open_library(self.db_path)

    def _with(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.service is not None:
            return self.service.with_db(fn, *args, **kwargs)
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._open()
        try:
            return fn(db, *args, **kwargs)
        finally:
            if db.conn.in_transaction:
                db.conn.rollback()

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # ---- the API ----------------------------------------------------------------------------------------------
    def submit(self, plan: BatchPlan, results_dir: str | os.PathLike[str] | None = None) -> int:
        base = Path(results_dir) if results_dir else self.results_dir
        return self._with(J.add_batch, plan, base.resolve())

    def batch_dir(self, batch_id: int) -> Path:
        batch = self._with(J.get_batch, batch_id)
        return Path(batch.results_dir or self.results_dir) / str(batch_id)

    def run(self, batch_id: int | None = None, servers: Sequence[str] | None = None, *,
            progress: Callable[[JobEvent], None] | None = None, stop: threading.Event | None = None,
            in_flight: int | None = None, backend: str | None = None, **options: Any) -> RunSummary:
        settings = queue_settings(servers, backend=backend, in_flight=in_flight)
        if batch_id is not None:
            self._with(J.get_batch, batch_id)
        dirs: dict[int, Path] = {}

        def results_dir(b: int) -> Path:
            if b not in dirs:
                db = self._open()
                try:
                    batch = J.get_batch(db, b)
                finally:
                    db.close()
                dirs[b] = Path(batch.results_dir or self.results_dir) / str(b)
            return dirs[b]

        if settings.backend == "ray":
            from .ray_backend import RayDispatcher

            return RayDispatcher(self._open, list(settings.servers), results_dir, batch_id=batch_id,
                                 in_flight=settings.in_flight, progress=progress, stop=stop, **options).run_sync()
        return Dispatcher(self._open, settings.urls, results_dir, batch_id=batch_id, in_flight=settings.in_flight,
                          progress=progress, stop=stop, **options).run_sync()

    def results(self, batch_id: int) -> list[ItemResult]:
        return [job.result() for job in self.jobs(batch_id)]

    def batch(self, batch_id: int) -> J.Batch:
        return self._with(J.get_batch, batch_id)

    def batches(self, *, limit: int = 50) -> list[J.Batch]:
        return self._with(J.list_batches, limit=limit)

    def jobs(self, batch_id: int | None = None, states: Iterable[str] = (), *, limit: int = 100_000,
             offset: int = 0) -> list[J.Job]:
        return self._with(J.list_jobs, batch_id=batch_id, states=states, limit=limit, offset=offset)

    def job(self, job_id: int, *, workflow: bool = False) -> J.Job:
        return self._with(J.get_job, job_id, workflow=workflow)

    def cancel(self, batch_id: int | None = None, job_ids: Iterable[int] = ()) -> list[J.Job]:
        """Cancel; in-flight jobs are taken off their servers (best effort: an unreachable server is skipped)."""
        flying = self._with(J.cancel, batch_id=batch_id, job_ids=job_ids)
        if flying:
            asyncio.run(_drop_from_servers(flying))
        return flying

    def retry(self, batch_id: int | None = None, job_ids: Iterable[int] = ()) -> int:
        return self._with(J.retry, batch_id=batch_id, job_ids=job_ids)


async def _drop_from_servers(flying: list[J.Job]) -> None:
    from .comfy_client import ComfyClient

    async with aiohttp.ClientSession() as session:
        by_server: dict[str, list[J.Job]] = {}
        for job in flying:
            if job.server:
                by_server.setdefault(job.server, []).append(job)
        for url, jobs in by_server.items():
            client = ComfyClient(session, url, timeout=10)
            pids = [j.server_prompt_id or j.prompt_id for j in jobs if j.server_prompt_id or j.prompt_id]
            try:
                await client.delete(pids)
                for pid in pids:
                    await client.interrupt(pid)
            except ComfyServerError:
                continue
