"""The optional Ray backend (``pip install "lorawb[cluster]"``, setting ``"batch_backend": "ray"``): one Ray actor per
ComfyUI server, for batches spread over machines.

* Each :class:`ComfyActor` is created with the server's resources from the settings (``num_gpus``, ``num_cpus``;
  default ``num_cpus=0``), ``max_concurrency`` = jobs in flight, ``max_pending_calls`` (Ray's backpressure) and
  ``max_restarts``/``max_task_retries`` (Ray's retries when an actor process dies).
* A job call is idempotent: the actor first looks for the job's ``prompt_id`` marker on its server (``/queue``,
  ``/history``) and only submits when it is not there, so Ray retrying a call — or a rerun after the driver was
  killed — never submits a prompt twice.
* The driver (this process) keeps the job table: it claims jobs exactly like the built-in dispatcher
  (:mod:`lorawb_core.batch.jobs`), sends each to the least busy live actor, and writes the images the actor returns
  (bytes, so the ComfyUI machines need no shared disk) atomically into the results folder.

Ray is started on first use when it is not running: ``LORAWB_RAY_ADDRESS`` (or ``RAY_ADDRESS``) joins a cluster;
otherwise :func:`local_ray` starts a local one bound to 127.0.0.1 without the dashboard or usage reporting.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ComfyServerError, PromptRejected, ServerUnreachable, UsageError
from . import jobs as J
from .comfy_client import ComfyClient, history_error, write_atomic
from .outcome import BACKOFF_S, JobEvent, RunSummary, backoff_delay, file_stem
from .servers import ServerSpec

log = logging.getLogger("lorawb")
_ACTORS: dict[tuple, Any] = {}
_ACTORS_LOCK = threading.Lock()
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def _ray():
    try:
        import ray
    except ImportError:
        raise UsageError('the Ray backend needs Ray: pip install "lorawb[cluster]" (or set "batch_backend": '
                         '"builtin").') from None
    return ray


def local_ray(num_cpus: int | None = None) -> None:
    """Start a local Ray that listens on 127.0.0.1 only (no dashboard, no usage stats), unless one is running.

    Ray resolves ``127.0.0.1`` to the machine's LAN address unless clustering is off
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read by its constants and by every process it spawns)."""
    ray = _ray()
    if ray.is_initialized():
        return
    os.environ.update(LOOPBACK_ENV)
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # ray may have been imported before the environment was set
    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)


def _ensure_ray() -> Any:
    ray = _ray()
    if not ray.is_initialized():
        address = os.environ.get("LORAWB_RAY_ADDRESS") or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            local_ray()
    return ray


class ComfyActor:
    """One ComfyUI server, as a Ray actor (wrapped with ``ray.remote`` when the backend starts)."""

    def __init__(self, url: str, poll_s: float = 0.25, timeout_s: float = 30.0) -> None:
        self.url, self.poll_s, self.timeout_s = url, poll_s, timeout_s
        self._session = None
        self._seen: set[str] = set()

    async def _client(self) -> ComfyClient:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return ComfyClient(self._session, self.url, client_id=f"lorawb-ray-{os.getpid()}", timeout=self.timeout_s)

    async def health(self) -> int:
        """``queue_remaining`` of the server; raises when it does not answer."""
        return await (await self._client()).queue_remaining()

    def _first_call(self, prompt_id: str, fresh: bool) -> bool:
        """True when no earlier call can have sent ``prompt_id``: the driver claimed it just now, this actor process
        has not seen it, and Ray has not restarted the actor (a retried call lands on a restarted actor)."""
        import ray

        seen = prompt_id in self._seen
        self._seen.add(prompt_id)
        return fresh and not seen and not ray.get_runtime_context().was_current_actor_reconstructed

    async def run(self, workflow: dict[str, Any], output_node: str, prompt_id: str, fresh: bool = False
                  ) -> dict[str, Any]:
        """Run one prompt (or follow it if the server already has it); ``{"kind": done|failed|rejected|retry|
        unreachable|lost, "prompt_id", "images": [(suffix, bytes)], "error"}``."""
        client = await self._client()
        try:
            hit = None
            if not self._first_call(prompt_id, fresh):
                hit = (await client.locate([prompt_id], [prompt_id])).get(prompt_id)
            pid = hit.prompt_id if hit else await client.submit(workflow, prompt_id=prompt_id, marker=prompt_id)
            entry = hit.entry if hit else None
            last_look, wait = time.monotonic(), 0.005
            while entry is None:
                await asyncio.sleep(wait)
                wait = min(wait * 2, self.poll_s)  # small prompts finish in milliseconds, big ones take seconds
                entry = await client.history(pid)
                if entry is None and time.monotonic() - last_look > 2.0:
                    last_look = time.monotonic()
                    if pid not in await client.locate([pid]):
                        return {"kind": "lost", "prompt_id": pid, "error": f"{self.url} lost the prompt (restarted)"}
            error = history_error(entry)
            if error:
                return {"kind": "failed", "prompt_id": pid, "error": error}
            images = ((entry.get("outputs") or {}).get(output_node) or {}).get("images") or []
            if not images:
                return {"kind": "failed", "prompt_id": pid,
                        "error": f"node {output_node} saved no images (is it the SaveImage node?)"}
            data = [(Path(i.get("filename", "x.png")).suffix or ".png", await client.view(i)) for i in images]
            return {"kind": "done", "prompt_id": pid, "images": data}
        except PromptRejected as exc:
            return {"kind": "rejected", "error": f"ComfyUI rejected the prompt: {exc}"}
        except ServerUnreachable as exc:
            return {"kind": "unreachable", "error": str(exc)}
        except ComfyServerError as exc:
            return {"kind": "retry", "error": str(exc)}


class RayDispatcher:
    """The same contract as :class:`~lorawb_core.batch.dispatch.Dispatcher`, with the servers behind Ray actors."""

    def __init__(self, db_open: Callable[[], Any], servers: list[ServerSpec], results_dir: Callable[[int], Path], *,
                 batch_id: int | None = None, in_flight: int = 2, progress: Callable[[JobEvent], None] | None = None,
                 stop: threading.Event | None = None, poll_s: float = 0.25, timeout_s: float = 30.0,
                 dead_after_s: float = 30.0, max_restarts: int = 2, backoff_s: tuple[float, ...] = BACKOFF_S) -> None:
        if not servers:
            raise ComfyServerError("no ComfyUI server to run the jobs on: give --server URL (or the servers setting).")
        self.specs = {s.url.rstrip("/"): s for s in servers}
        self.results_dir, self.batch_id, self.k = results_dir, batch_id, in_flight
        self.progress, self.stop = progress, stop or threading.Event()
        self.poll_s, self.timeout_s, self.dead_after_s = poll_s, timeout_s, dead_after_s
        self.max_restarts, self.backoff_s = max_restarts, backoff_s
        self._db_open = db_open
        self.summary = RunSummary()

    def _emit(self, job: J.Job, state: str, server: str | None = None, **extra: Any) -> None:
        if self.progress is not None:
            try:
                self.progress(JobEvent(job.id, job.batch_id, job.key, state, server or job.server, **extra))
            except Exception:
                log.exception("lorawb: the job progress callback failed")

    def _actor(self, ray: Any, url: str, spec: ServerSpec) -> Any:
        """The actor for ``url`` with these options: made once per Ray session and kept for the next runs (starting
        a Ray worker costs about a second)."""
        key = (ray.get_runtime_context().get_job_id(), url, self.k, tuple(sorted(spec.resources.items())),
               self.poll_s, self.timeout_s, self.max_restarts)
        with _ACTORS_LOCK:
            actor = _ACTORS.get(key)
            if actor is None:
                actor = _ACTORS[key] = ray.remote(ComfyActor).options(
                    num_cpus=spec.resources.get("num_cpus", 0), num_gpus=spec.resources.get("num_gpus", 0),
                    max_concurrency=self.k, max_pending_calls=self.k * 4, max_restarts=self.max_restarts,
                    max_task_retries=self.max_restarts).remote(url, self.poll_s, self.timeout_s)
        return actor

    def run_sync(self) -> RunSummary:
        ray = _ensure_ray()
        actors = {url: self._actor(ray, url, spec) for url, spec in self.specs.items()}
        db = self._db_open()
        try:
            return self._run(ray, actors, db)
        finally:
            db.close()

    def _health(self, ray: Any, actors: dict[str, Any]) -> dict[str, int]:
        refs = {url: a.health.remote() for url, a in actors.items()}
        alive = {}
        for url, ref in refs.items():
            try:
                alive[url] = ray.get(ref, timeout=self.timeout_s + 5)
            except ray.exceptions.RayActorError:  # Ray gave up on the actor: the next run makes a new one
                with _ACTORS_LOCK:
                    for key in [k for k, a in _ACTORS.items() if a is actors[url]]:
                        del _ACTORS[key]
            except Exception:  # ServerUnreachable inside a RayTaskError, a time-out
                continue
        return alive

    def _unreachable(self, db: Any) -> None:
        raise ServerUnreachable(f"no ComfyUI server answers at {', '.join(self.specs)}; the "
                                f"{J.pending_count(db, batch_id=self.batch_id)} unfinished job(s) stay queued: start "
                                "ComfyUI (or give another --server URL) and run again.", ", ".join(self.specs))

    def _send(self, actors: dict[str, Any], url: str, job: J.Job, pending: dict, load: dict[str, int], *,
              fresh: bool) -> None:
        ref = actors[url].run.remote(job.workflow or {}, job.output_node, job.prompt_id, fresh)
        pending[ref] = (job, url)
        load[url] += 1

    def _run(self, ray: Any, actors: dict[str, Any], db: Any) -> RunSummary:
        alive = self._health(ray, actors)
        if not alive:
            self._unreachable(db)
        load = dict.fromkeys(actors, 0)
        pending: dict[Any, tuple[J.Job, str]] = {}
        for job in J.in_flight(db, batch_id=self.batch_id):  # after a crash: the actor follows or (re)sends it
            url = (job.server or "").rstrip("/")
            if url in alive:
                job = J.get_job(db, job.id, workflow=True)
                self.summary.recovered += 1
                self._send(actors, url, job, pending, load, fresh=False)
            else:
                J.requeue(db, job, f"its server {job.server} is not in this run or not answering", count=False)
        down_since: float | None = None
        last_health = time.monotonic()
        while not self.stop.is_set():
            while True:  # fill every live actor up to K, least busy first
                free = [u for u in alive if load[u] < self.k]
                if not free:
                    break
                url = min(free, key=lambda u: (max(load[u], alive[u]), u))
                job = J.claim(db, url, batch_id=self.batch_id)
                if job is None:
                    break
                self._emit(job, "submitted", url)
                self._send(actors, url, job, pending, load, fresh=True)
            if not pending and J.next_ready_in(db, batch_id=self.batch_id) is None:
                break  # nothing queued and nothing of ours in flight
            if not alive:
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > self.dead_after_s:
                    self._unreachable(db)
            if time.monotonic() - last_health > 2.0 or not alive:
                last_health = time.monotonic()
                alive = {**self._health(ray, {u: a for u, a in actors.items() if u not in alive}), **alive}
                down_since = None if alive else down_since
            if not pending:
                time.sleep(0.1)
                continue
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                job, url = pending.pop(ref)
                load[url] -= 1
                try:
                    out = ray.get(ref)
                except Exception as exc:  # the actor died and Ray gave up restarting it
                    out = {"kind": "unreachable", "error": f"the Ray actor for {url} failed ({type(exc).__name__})"}
                self._record(db, job, url, out, alive)
        else:
            self.summary.stopped = True
        self.summary.left = J.pending_count(db, batch_id=self.batch_id)
        return self.summary

    def _record(self, db: Any, job: J.Job, url: str, out: dict[str, Any], alive: dict[str, int]) -> None:
        kind, error = out.get("kind"), out.get("error") or ""
        if kind == "done":
            J.sent(db, job, out["prompt_id"])
            base, stem = self.results_dir(job.batch_id), file_stem(job.key)
            try:
                paths = [write_atomic(base / f"{stem}{'' if i == 0 else f'-{i + 1}'}{suffix}", data)
                         for i, (suffix, data) in enumerate(out["images"])]
            except OSError as exc:
                kind, error = "retry", f"saving its images failed ({exc})"
            else:
                if J.finish(db, job, paths):
                    self.summary.done += 1
                    self.summary.per_server[url] = self.summary.per_server.get(url, 0) + 1
                    self._emit(job, "done", url, images=tuple(str(p) for p in paths))
                return
        if kind in ("failed", "rejected"):
            if J.fail(db, job, error):
                self.summary.failed += 1
                self._emit(job, "failed", url, error=error)
            return
        if kind == "unreachable":
            alive.pop(url, None)
        count = kind == "retry"
        delay = backoff_delay(job.attempts, self.backoff_s) if count else 0.0
        state = J.requeue(db, job, error, delay=delay, count=count)
        if state:
            self.summary.requeued += state == "queued"
            self.summary.failed += state == "failed"
            self._emit(job, state, url, error=error)


__all__ = ["ComfyActor", "RayDispatcher", "local_ray"]
