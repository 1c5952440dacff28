"""The batch queue over HTTP: list, show, cancel and retry jobs; run the queue in the background.

Routes (bound by :mod:`.routes`): ``GET /lorawb/jobs`` (the batches, or ``?batch=N`` its jobs, ``&state=failed``),
``GET /lorawb/jobs/{job_id}``, ``POST /lorawb/jobs/{job_id}/cancel|retry``, ``POST /lorawb/batches/{batch_id}/
cancel|retry``, ``POST /lorawb/jobs/run`` (start the runner; body ``{"servers": [...]}`` optional).

Other routes queue work through :meth:`JobRoutes.enqueue` (a :class:`~lorawb_core.batch.work.BatchPlan` in, the batch
id out; the runner starts by itself). One runner thread per service runs every queued job on the configured servers
(:func:`lorawb_core.batch.servers.queue_settings`; inside ComfyUI the host itself) until none is left.

Events: ``lorawb.job`` ``{job, batch, key, state, server, value?, max?, error?, images?}`` on every state change (and
sampler progress, at most 5 per second per job); ``lorawb.jobs_idle`` ``{done, failed, left}`` when the runner
stops; ``lorawb.jobs_error`` ``{type, message}`` when it cannot run (no server answers: the jobs stay queued);
``lorawb.batch_done`` when a batch's last job ended and its finisher ran (:mod:`.batch_routes`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from aiohttp import web

from ..batch import jobs as J
from .http import BadRequest, read_json

log = logging.getLogger("lorawb")
_runners: dict[int, JobRunner] = {}
_runners_lock = threading.Lock()


def _id(request: web.Request, name: str) -> int:
    value = request.match_info.get(name, "")
    if not value.isdigit() or len(value) > 12:
        raise BadRequest(f"{value[:40]!r} is not a {name.replace('_', ' ')} (a whole number).", field=name)
    return int(value)


class JobRunner:
    """The background thread that runs the queue for one service."""

    job_ended: Any = None
    """``job_ended(runner, batch_id)`` after a job reached a final state (set by :mod:`.batch_routes`)."""

    def __init__(self, service: Any) -> None:
        from ..batch.queue import BatchQueue

        self.service = service
        self.queue = BatchQueue(service)
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.servers: list[str] | None = None
        self.last: dict[str, Any] = {"state": "idle"}
        self._progress_at: dict[int, float] = {}
        self._restart = False

    def status(self) -> dict[str, Any]:
        return {**self.last, "running": bool(self.thread and self.thread.is_alive())}

    def start(self, servers: list[str] | None = None) -> dict[str, Any]:
        with _runners_lock:
            if servers and servers != self.servers:
                self.servers = servers
                self._restart = True  # a running thread picks the new list up when its run ends or fails
            if self.thread is None or not self.thread.is_alive():
                self.stop.clear()
                self.thread = threading.Thread(target=self._run, daemon=True, name="lorawb-jobs")
                self.last = {"state": "running", "started_at": time.time()}
                self.thread.start()
        return self.status()

    def _on_event(self, ev: Any) -> None:
        if ev.state == "running" and ev.value is not None:
            now = time.monotonic()
            if now - self._progress_at.get(ev.job_id, 0.0) < 0.2:
                return
            self._progress_at[ev.job_id] = now
        data = {"job": ev.job_id, "batch": ev.batch_id, "key": ev.key, "state": ev.state, "server": ev.server}
        for name in ("value", "max", "error"):
            if getattr(ev, name) is not None:
                data[name] = getattr(ev, name)
        if ev.images:
            data["images"] = list(ev.images)
        self.service._send("lorawb.job", data)
        if ev.state in J.FINAL and JobRunner.job_ended is not None:  # batch_routes finishes a batch whose last
            JobRunner.job_ended(self, ev.batch_id)                     # job this was

    def _run(self) -> None:
        from ..errors import LorawbError

        try:
            while not self.stop.is_set():
                self._restart = False
                try:
                    summary = self.queue.run(None, self.servers, progress=self._on_event, stop=self.stop)
                except LorawbError:
                    if self._restart:  # the servers changed meanwhile: try those
                        continue
                    raise
                if summary.stopped or not self.queue.jobs(None, ["queued"], limit=1):
                    break  # nothing new was queued while it ran
            self.last = {"state": "idle", "done": summary.done, "failed": summary.failed, "left": summary.left,
                         "finished_at": time.time()}
            self.service._send("lorawb.jobs_idle", {k: self.last[k] for k in ("done", "failed", "left")})
        except Exception as exc:  # the thread reports every failure as data
            if isinstance(exc, LorawbError):
                message = str(exc)
            else:
                log.exception("lorawb: the job runner failed")
                message = f"the job runner failed ({type(exc).__name__}: {exc}); see the server log."
            self.last = {"state": "error", "type": type(exc).__name__, "message": message, "finished_at": time.time()}
            self.service._send("lorawb.jobs_error", {"type": type(exc).__name__, "message": message})
        finally:
            self.queue.close()


def runner_for(service: Any) -> JobRunner:
    with _runners_lock:
        runner = _runners.get(id(service))
        if runner is None or runner.service is not service:
            runner = _runners[id(service)] = JobRunner(service)
        return runner


class JobRoutes:
    """Job table handlers; ``enqueue`` is the entry for the planning routes (previews, A/B, XY)."""

    async def enqueue(self, plan: Any, *, results_dir: str | None = None, start: bool = True) -> dict[str, Any]:
        runner = runner_for(self.service)
        batch_id = await self.run(runner.queue.submit, plan, results_dir)
        batch = await self.run_db(J.get_batch, batch_id)
        if start:
            runner.start()
        return {"batch": batch.to_dict(), "runner": runner.status()}

    async def list_jobs(self, request: web.Request) -> dict[str, Any]:
        from .http import q_int

        batch = q_int(request, "batch", 0, lo=0, hi=10**12) or None
        states = [s for s in request.query.getall("state", []) if s]
        bad = [s for s in states if s not in J.STATES]
        if bad:
            raise BadRequest(f"unknown job state {bad[0][:20]!r}; states are {', '.join(J.STATES)}.", field="state")
        runner = runner_for(self.service).status()
        if batch is None and not states:
            batches = await self.run_db(J.list_batches, limit=q_int(request, "limit", 50, lo=1, hi=500))
            return {"batches": [b.to_dict() for b in batches], "runner": runner}
        limit, offset = q_int(request, "limit", 200, lo=1, hi=2000), q_int(request, "offset", 0, lo=0, hi=10**9)
        jobs = await self.run_db(J.list_jobs, batch_id=batch, states=states, limit=limit, offset=offset)
        out: dict[str, Any] = {"jobs": [j.to_dict() for j in jobs], "runner": runner}
        if batch is not None:
            out["batch"] = (await self.run_db(J.get_batch, batch)).to_dict()
        return out

    async def get_job(self, request: web.Request) -> dict[str, Any]:
        from .http import q_bool

        job = await self.run_db(J.get_job, _id(request, "job_id"), workflow=q_bool(request, "workflow"))
        return job.to_dict(workflow=job.workflow is not None)

    async def cancel_job(self, request: web.Request) -> dict[str, Any]:
        job_id = _id(request, "job_id")
        flying = await self.run(runner_for(self.service).queue.cancel, None, [job_id])
        return {"job": (await self.run_db(J.get_job, job_id)).to_dict(), "dropped_from_server": len(flying)}

    async def retry_job(self, request: web.Request) -> dict[str, Any]:
        job_id = _id(request, "job_id")
        count = await self.run_db(J.retry, job_ids=[job_id])
        if count:
            runner_for(self.service).start()
        return {"job": (await self.run_db(J.get_job, job_id)).to_dict(), "requeued": count}

    async def cancel_batch(self, request: web.Request) -> dict[str, Any]:
        batch_id = _id(request, "batch_id")
        flying = await self.run(runner_for(self.service).queue.cancel, batch_id)
        return {"batch": (await self.run_db(J.get_batch, batch_id)).to_dict(), "dropped_from_server": len(flying)}

    async def retry_batch(self, request: web.Request) -> dict[str, Any]:
        batch_id = _id(request, "batch_id")
        count = await self.run_db(J.retry, batch_id=batch_id)
        if count:
            runner_for(self.service).start()
        return {"batch": (await self.run_db(J.get_batch, batch_id)).to_dict(), "requeued": count}

    async def run_jobs(self, request: web.Request) -> dict[str, Any]:
        from ..batch.servers import normalize_url
        from ..errors import UsageError

        body = await read_json(request)
        servers = body.get("servers")
        if servers is not None:
            if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers) or len(servers) > 64:
                raise BadRequest("'servers' must be a list of ComfyUI URLs.", field="servers")
            try:
                servers = [normalize_url(s) for s in servers]
            except UsageError as exc:
                raise BadRequest(str(exc), field="servers") from None
        runner = runner_for(self.service)
        if not runner.status()["running"] and not await self.run_db(J.pending_count):
            return {**runner.status(), "left": 0}  # nothing queued: no thread, no server contacted
        return runner.start(servers or None)
