"""The built-in dispatcher: runs the queued jobs of the job table on one or many ComfyUI servers (asyncio + aiohttp).

* **In flight**: at most ``in_flight`` prompts per server; the next job goes to the least busy healthy server (our
  prompts there, or its ``exec_info.queue_remaining`` from ``/ws`` status events when that is larger).
* **Groups**: a server takes jobs of the group (checkpoint) it ran last, then groups no other server is on.
* **Completion**: ``/ws`` events (``executing`` … ``node: null``, ``execution_success|error|interrupted``) wake the
  job, ``/history/{id}`` is the truth (and the fallback, polled); the output node's images are fetched with
  ``/view`` into ``<results_dir>/<batch>/<key>.png`` atomically.
* **Failures**: a prompt ComfyUI rejects fails its job with the ``node_errors`` and the batch goes on; 5xx, broken
  answers and time-outs requeue with backoff (attempts counted); a server that stops answering is marked down and its
  jobs go back to the queue for a live one (attempts not counted); a server that restarted (the prompt is neither in
  its queue nor its history) gets the job again. No server answering: :class:`~lorawb_core.errors.ServerUnreachable`
  naming the URLs, the jobs stay queued.
* **Crash safety**: a job is marked ``submitted`` with our ``prompt_id`` *before* it is sent; a later run looks for
  every in-flight job on its server (``/queue``, ``/history``, by id or by the marker in ``extra_data``) and follows
  it instead of sending it again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ..errors import ComfyServerError, PromptRejected, ServerFailed, ServerUnreachable
from . import jobs as J
from .comfy_client import ComfyClient, history_error
from .outcome import BACKOFF_S, JobEvent, RunSummary, backoff_delay, file_stem

log = logging.getLogger("lorawb")
DONE_EVENTS = frozenset({"execution_success", "execution_error", "execution_interrupted"})


@dataclass
class _Server:
    url: str
    client: ComfyClient
    healthy: bool = False
    remaining: int = 0
    last_group: str | None = None
    ws_connected: bool = False
    follow_only: bool = False
    """A server not in this run's list that has a job of an earlier run: followed, never given work."""
    flights: dict[int, asyncio.Task] = field(default_factory=dict)
    wakers: dict[str, asyncio.Event] = field(default_factory=dict)
    jobs_by_pid: dict[str, J.Job] = field(default_factory=dict)
    armed: set[str] = field(default_factory=set)
    """Prompts the event stream said are finished: their history is (about to be) there."""
    began: set[str] = field(default_factory=set)
    """Prompts the event stream said started (it may say so before ``POST /prompt`` has answered)."""

    @property
    def load(self) -> int:
        return max(len(self.flights), self.remaining)


class Dispatcher:
    """Runs jobs until none is left (or ``stop`` is set). ``db_open`` opens a library connection (called once, in
    the dispatcher's own database thread); ``results_dir(batch_id)`` says where a batch's images go."""

    def __init__(self, db_open: Callable[[], Any], servers: list[str], results_dir: Callable[[int], Path], *,
                 batch_id: int | None = None, in_flight: int = 2, progress: Callable[[JobEvent], None] | None = None,
                 stop: threading.Event | None = None, poll_s: float = 1.0, dead_after_s: float = 30.0,
                 timeout_s: float = 30.0, backoff_s: tuple[float, ...] = BACKOFF_S) -> None:
        if not servers:
            raise ComfyServerError("no ComfyUI server to run the jobs on: give --server URL (or the servers setting).")
        if in_flight < 1:
            raise ComfyServerError("in_flight must be at least 1.")
        self.urls = list(dict.fromkeys(u.rstrip("/") for u in servers))
        self.results_dir, self.batch_id, self.k = results_dir, batch_id, in_flight
        self.progress, self.stop = progress, stop or threading.Event()
        self.poll_s, self.dead_after_s, self.timeout_s, self.backoff_s = poll_s, dead_after_s, timeout_s, backoff_s
        self._db_open = db_open
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorawb-jobs-db")
        self._db: Any = None
        self._wake: asyncio.Event | None = None
        self.summary = RunSummary()

    # ---- plumbing ---------------------------------------------------------------------------------------------
    async def _q(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def call():
            if self._db is None:
                self._db = self._db_open()
            return fn(self._db, *args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _emit(self, job: J.Job, state: str, **extra: Any) -> None:
        if self.progress is None:
            return
        try:
            self.progress(JobEvent(job.id, job.batch_id, job.key, state, extra.pop("server", job.server), **extra))
        except Exception:  # a broken callback must not stop the batch
            log.exception("lorawb: the job progress callback failed")

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # ---- the run ----------------------------------------------------------------------------------------------
    def run_sync(self) -> RunSummary:
        try:
            return asyncio.run(self.run())
        finally:
            self._close_db()

    def _close_db(self) -> None:
        def close():
            if self._db is not None:
                self._db.close()
                self._db = None

        self._executor.submit(close).result()
        self._executor.shutdown(wait=True)

    async def run(self) -> RunSummary:
        self._wake = asyncio.Event()
        client_id = f"lorawb-{uuid.uuid4().hex[:12]}"
        connector = aiohttp.TCPConnector(limit_per_host=self.k + 4)
        async with aiohttp.ClientSession(connector=connector) as session:
            servers = {u: _Server(u, ComfyClient(session, u, client_id=client_id, timeout=self.timeout_s))
                       for u in self.urls}
            watchers: list[asyncio.Task] = []
            try:
                await asyncio.gather(*(self._check(s) for s in servers.values()))
                if not any(s.healthy for s in servers.values()):
                    await self._unreachable(servers)
                watchers = [asyncio.create_task(self._watch(s)) for s in servers.values()]
                deadline = time.monotonic() + 2.0  # ComfyUI greets a new /ws client with a status message
                while time.monotonic() < deadline and not all(s.ws_connected for s in servers.values() if s.healthy):
                    await asyncio.sleep(0.01)
                await self._recover(servers, session, client_id)
                await self._loop(servers)
            finally:
                for s in servers.values():
                    for t in s.flights.values():
                        t.cancel()
                for t in watchers:
                    t.cancel()
                await asyncio.gather(*watchers, *(t for s in servers.values() for t in s.flights.values()),
                                     return_exceptions=True)
        self.summary.left = await self._q(J.pending_count, batch_id=self.batch_id)
        return self.summary

    async def _unreachable(self, servers: dict[str, _Server]) -> None:
        left = await self._q(J.pending_count, batch_id=self.batch_id)
        raise ServerUnreachable(f"no ComfyUI server answers at {', '.join(servers)}; the {left} unfinished job(s) "
                                "stay queued: start ComfyUI (or give another --server URL) and run again.",
                                ", ".join(servers))

    async def _check(self, s: _Server) -> bool:
        try:
            s.remaining = await s.client.queue_remaining()
            s.healthy = True
        except ComfyServerError as exc:
            if s.healthy:
                log.warning("lorawb: %s", exc)
            s.healthy = False
        return s.healthy

    async def _loop(self, servers: dict[str, _Server]) -> None:
        down_since: float | None = None
        last_check = time.monotonic()
        while not self.stop.is_set():
            self._wake.clear()
            await self._fill(servers)
            flying = sum(len(s.flights) for s in servers.values())
            if flying == 0 and await self._q(J.next_ready_in, batch_id=self.batch_id) is None:
                return  # nothing queued and nothing of ours in flight (another dispatcher's jobs are its own)
            healthy = [s for s in servers.values() if s.healthy and not s.follow_only]
            if healthy:
                down_since = None
            else:
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > self.dead_after_s:
                    await self._unreachable(servers)
            if time.monotonic() - last_check > 2.0 or not healthy:
                last_check = time.monotonic()
                await asyncio.gather(*(self._check(s) for s in servers.values() if not s.healthy and not s.follow_only))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=0.25 if flying == 0 else 1.0)
            except asyncio.TimeoutError:
                pass
        self.summary.stopped = True

    async def _fill(self, servers: dict[str, _Server]) -> None:
        while not self.stop.is_set():
            free = [s for s in servers.values() if s.healthy and not s.follow_only and len(s.flights) < self.k]
            if not free:
                return
            s = min(free, key=lambda s: (s.load, s.url))
            others = {o.last_group for o in servers.values() if o is not s and o.flights and o.last_group is not None}
            job = await self._q(J.claim, s.url, batch_id=self.batch_id, prefer_group=s.last_group,
                                avoid_groups=others)
            if job is None:
                return
            s.last_group = job.group
            self._start(s, job, fresh=True)

    def _start(self, s: _Server, job: J.Job, *, fresh: bool, located: Any = None) -> None:
        task = asyncio.create_task(self._fly(s, job, fresh=fresh, located=located))
        s.flights[job.id] = task
        task.add_done_callback(lambda _t: (s.flights.pop(job.id, None), self._poke()))

    # ---- recovery after a crash -------------------------------------------------------------------------------
    async def _recover(self, servers: dict[str, _Server], session: aiohttp.ClientSession, client_id: str) -> None:
        for job in await self._q(J.in_flight, batch_id=self.batch_id):
            s = servers.get((job.server or "").rstrip("/"))
            client = s.client if s else ComfyClient(session, job.server or "", client_id=client_id,
                                                    timeout=self.timeout_s)
            keys = [k for k in (job.server_prompt_id, job.prompt_id) if k]
            try:
                found = await client.locate(keys, [job.prompt_id] if job.prompt_id else [])
            except ComfyServerError as exc:
                await self._requeue(job, f"its server is gone ({exc})", count=False)
                continue
            hit = next((found[k] for k in keys if k in found), None)
            if hit is None:
                await self._requeue(job, f"{job.server} does not have it (never arrived, or the server restarted)",
                                    count=False)
                continue
            self.summary.recovered += 1
            if job.server_prompt_id != hit.prompt_id:
                await self._q(J.sent, job, hit.prompt_id)
                job = await self._q(J.get_job, job.id)
            if s is None:  # a server not in this run's list: follow the job there without giving it new work
                s = servers.setdefault(job.server, _Server(job.server, client, follow_only=True))
            self._start(s, job, fresh=False, located=hit)

    # ---- one job ----------------------------------------------------------------------------------------------
    async def _requeue(self, job: J.Job, error: str, *, count: bool) -> None:
        delay = backoff_delay(job.attempts, self.backoff_s) if count else 0.0
        state = await self._q(J.requeue, job, error, delay=delay, count=count)
        if state:
            self.summary.requeued += state == "queued"
            self.summary.failed += state == "failed"
            self._emit(job, state, error=error)

    async def _fly(self, s: _Server, job: J.Job, *, fresh: bool, located: Any = None) -> None:
        pid = job.server_prompt_id or job.prompt_id or ""
        try:
            if fresh:
                self._emit(job, "submitted", server=s.url)
                s.remaining += 1
                pid = await s.client.submit(job.workflow or {}, prompt_id=job.prompt_id or "", marker=job.prompt_id
                                            or "")
                await self._q(J.sent, job, pid)
            waker = s.wakers.setdefault(pid, asyncio.Event())
            s.jobs_by_pid[pid] = job
            if pid in s.began:  # it started before we listened
                await self._q(J.started, job)
                self._emit(job, "running", server=s.url)
            if pid in s.armed:  # it finished before we listened
                waker.set()
            entry = located.entry if located is not None and located.entry is not None else None
            last_look = time.monotonic()
            while entry is None:
                # woken by this prompt's end event, then (if its history was not written yet) by the next status
                timeout = 0.05 if pid in s.armed else self.poll_s if s.ws_connected else 0.2
                try:
                    await asyncio.wait_for(waker.wait(), timeout=timeout)
                except asyncio.TimeoutError:
                    pass
                waker.clear()
                entry = await s.client.history(pid)
                if entry is None and time.monotonic() - last_look > (5.0 if s.ws_connected else 1.0):
                    last_look = time.monotonic()  # still queued or running there? (a restarted server forgot it)
                    found = await s.client.locate([pid])
                    if pid not in found:
                        await self._requeue(job, f"{s.url} lost the prompt (the server restarted)", count=False)
                        return
                    entry = found[pid].entry
            await self._finished(s, job, pid, entry)
        except PromptRejected as exc:
            if await self._q(J.fail, job, f"ComfyUI rejected the prompt: {exc}"):
                self.summary.failed += 1
                self._emit(job, "failed", error=str(exc), server=s.url)
        except ServerUnreachable as exc:
            s.healthy = False
            await self._requeue(job, str(exc), count=False)
        except ServerFailed as exc:
            await self._requeue(job, str(exc), count=True)
        except OSError as exc:  # disk full, permissions: the images could not be saved
            await self._requeue(job, f"saving its images failed ({exc})", count=True)
        finally:
            s.wakers.pop(pid, None)
            s.jobs_by_pid.pop(pid, None)
            s.armed.discard(pid)
            s.began.discard(pid)

    async def _finished(self, s: _Server, job: J.Job, pid: str, entry: dict[str, Any]) -> None:
        error = history_error(entry)
        if error is not None:
            if await self._q(J.fail, job, error):
                self.summary.failed += 1
                self._emit(job, "failed", error=error)
            return
        images = ((entry.get("outputs") or {}).get(job.output_node) or {}).get("images") or []
        if not images:
            if await self._q(J.fail, job, f"node {job.output_node} saved no images (is it the SaveImage node?)"):
                self.summary.failed += 1
                self._emit(job, "failed", error="no images")
            return
        base = self.results_dir(job.batch_id)
        stem = file_stem(job.key)
        paths = []
        for i, image in enumerate(images):
            suffix = Path(image.get("filename", "x.png")).suffix or ".png"
            paths.append(await s.client.download(image, base / f"{stem}{'' if i == 0 else f'-{i + 1}'}{suffix}"))
        if await self._q(J.finish, job, paths):
            self.summary.done += 1
            self.summary.per_server[s.url] = self.summary.per_server.get(s.url, 0) + 1
            self._emit(job, "done", images=tuple(str(p) for p in paths))

    # ---- the event stream -------------------------------------------------------------------------------------
    async def _watch(self, s: _Server) -> None:
        while True:
            if not s.healthy:
                await asyncio.sleep(0.5)
                continue
            try:
                async for ev in s.client.events():
                    s.ws_connected = True
                    self._on_event(s, ev)
            except ComfyServerError:
                pass
            except Exception:  # a malformed stream must not end the run: polling takes over
                log.exception("lorawb: the event stream of %s broke", s.url)
            s.ws_connected = False
            await asyncio.sleep(1.0)

    def _on_event(self, s: _Server, ev: Any) -> None:
        if ev.type == "status":  # sent after a finished prompt's history is written: time to look
            info = ((ev.data.get("status") or {}).get("exec_info") or {})
            s.remaining = int(info.get("queue_remaining", s.remaining))
            for pid in s.armed:
                if pid in s.wakers:
                    s.wakers[pid].set()
            return
        pid = ev.prompt_id
        if pid and (ev.type in DONE_EVENTS or (ev.type == "executing" and ev.data.get("node") is None)):
            if len(s.armed) > 10_000:  # prompts nobody waited for (another client's): forget them
                s.armed.clear()
            s.armed.add(pid)
            if pid in s.wakers:
                s.wakers[pid].set()
            return
        job = s.jobs_by_pid.get(pid) if pid else None
        if job is None:
            if pid and ev.type == "execution_start":
                if len(s.began) > 10_000:
                    s.began.clear()
                s.began.add(pid)
            return
        if ev.type == "execution_start":
            asyncio.ensure_future(self._q(J.started, job))
            self._emit(job, "running", server=s.url)
        elif ev.type == "progress":
            self._emit(job, "running", server=s.url, value=ev.data.get("value"), max=ev.data.get("max"))
