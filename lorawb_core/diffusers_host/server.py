"""``POST /lorawb/generate``: the generation service of ``lorawb serve --pipeline DIR``.

One pipeline runs one request at a time, in its own worker thread, so two requests never share LoRAs: each is apply →
sample → unload. Requests wait in a FIFO queue of ``queue_size``; when it is full the answer is 429 with a
``Retry-After`` (seconds, from the mean run time). A client that disconnects while queued leaves the queue; one that
disconnects while running stops its run at the next sampling step. LoRAs are named by stable ID or library name
(never a file path: a route opens nothing outside the library roots).

Body: ``{prompt, negative?, loras?: [{lora, strength?, strength_clip?, profile?|weights?}], steps?, width?, height?,
seed?, cfg?, variants?, fallback?, fuse?, format?: "png"|"json"}``; the seed service's ``brand_id``,
``lora_weights``, ``lora_configs: [{brand_id, weight, type}]``, ``num_inference_steps``, ``guidance_scale`` and
``negative_prompt`` are read too. Answer: a PNG (variants: the labelled sheet; what was applied in its ``lorawb``
text chunk and the ``X-Lorawb-Applied`` header), or with ``format: "json"`` (or ``Accept: application/json``)
``{images: [{label, png_base64, applied}], family, seed, steps}``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from ..errors import LorawbError
from ..server.http import error_body, json_response, read_json
from .generate import DEFAULT_LIMITS, GenerationRequest, Limits, generate, png_bytes, side_by_side
from .host import DiffusersHost

DEFAULT_QUEUE = 4


class ClientGone(LorawbError):
    """The client disconnected; its request was dropped."""


class QueueFull(LorawbError):
    """Every queue slot of the pipeline is taken."""


class GenerationService:
    """One pipeline, its host, its queue and counters. ``library``: a :class:`~lorawb_core.service.LibraryService`
    for stable IDs (None: no library, so no LoRA can be named). ``on_step`` is called in the worker at every step."""

    def __init__(self, pipe, library=None, *, cache=None, limits: Limits = DEFAULT_LIMITS, queue_size: int = DEFAULT_QUEUE,
                 on_step=None) -> None:
        self.host = DiffusersHost(pipe, cache=cache, allow_paths=False)
        self.library = library
        self.limits = limits
        self.queue_size = queue_size
        self.on_step = on_step
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorawb-generate")
        self._queue: deque[object] = deque()
        self._running = False
        self._changed: asyncio.Event | None = None
        self.stats = {"done": 0, "failed": 0, "rejected": 0, "cancelled": 0, "seconds": 0.0}

    def status(self) -> dict[str, Any]:
        return {"family": self.host.family, "pipeline": type(self.host.pipe).__name__, "running": self._running,
                "queued": len(self._queue), "queue_size": self.queue_size, **self.stats}

    def retry_after(self) -> int:
        mean = self.stats["seconds"] / self.stats["done"] if self.stats["done"] else 5.0
        return max(1, round(mean * (len(self._queue) + 1)))

    async def _wait_turn(self, request: web.Request) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        if len(self._queue) >= self.queue_size + (0 if self._running else 1):
            self.stats["rejected"] += 1
            raise QueueFull(f"the generation queue is full ({self.queue_size} waiting); retry later.")
        ticket = object()
        self._queue.append(ticket)
        try:
            while self._running or self._queue[0] is not ticket:
                if _gone(request):
                    self.stats["cancelled"] += 1
                    raise ClientGone("the client disconnected while its request was queued.")
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), 0.1)
                except asyncio.TimeoutError:
                    pass
            self._running = True
        except asyncio.CancelledError:  # aiohttp cancels the handler of a closed connection (handler_cancellation)
            self.stats["cancelled"] += 1
            raise
        finally:
            self._queue.remove(ticket)

    def _release(self) -> None:
        self._running = False
        if self._changed is not None:
            self._changed.set()

    def _work(self, req: GenerationRequest, request: web.Request):
        def check():
            if _gone(request):
                raise ClientGone("the client disconnected while its image was being generated.")
            if self.on_step is not None:
                self.on_step()

        def run(db):
            self.host.db = db
            try:
                return generate(self.host, req, check=check)
            finally:
                self.host.db = None

        return self.library.with_db(run) if self.library is not None else run(None)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request, required=True)
        req = GenerationRequest.from_dict(body, self.limits)
        fmt = body.get("format") or ("json" if "application/json" in request.headers.get("Accept", "") else "png")
        if fmt not in ("png", "json"):
            raise LorawbError("'format' must be png or json.")
        try:
            await self._wait_turn(request)
        except QueueFull as exc:
            resp = json_response(error_body("QueueFull", str(exc), "queue"), 429)
            resp.headers["Retry-After"] = str(self.retry_after())
            return resp
        started = time.monotonic()
        try:
            results = await asyncio.get_running_loop().run_in_executor(self.executor, self._work, req, request)
        except (ClientGone, asyncio.CancelledError):  # the worker stops at its next step (the client is gone)
            self.stats["cancelled"] += 1
            raise
        except BaseException:
            self.stats["failed"] += 1
            raise
        finally:
            self._release()
        self.stats["done"] += 1
        self.stats["seconds"] += time.monotonic() - started
        runs = [{"label": r.label, "applied": r.applied} for r in results]
        info = {"family": self.host.family, "seed": req.seed, "steps": req.steps, "runs": runs}
        if fmt == "json":
            return json_response({**info, "images": [
                {"label": r.label, "applied": r.applied, "png_base64": base64.b64encode(png_bytes(r.image)).decode()}
                for r in results]})
        image = results[0].image if len(results) == 1 else side_by_side(results)
        summary = [{"label": r["label"], "loras": [(a["stable_id"], a["strength"], a["weights_source"])
                                                   for a in r["applied"]["loras"]],
                    "fallback": bool(r["applied"]["fallback"])} for r in runs]
        return web.Response(body=png_bytes(image, info), content_type="image/png",
                            headers={"Cache-Control": "no-store", "X-Lorawb-Applied": json.dumps(summary)[:4000]})

    async def status_route(self, request: web.Request) -> dict[str, Any]:
        return self.status()

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()




def register_generate_routes(app: web.Application, service: GenerationService, *, security) -> None:
    """``POST /lorawb/generate`` (token rule as every mutating route) and ``GET /lorawb/generate`` (queue status)."""
    from ..server.http import endpoint

    app.router.add_post("/lorawb/generate", endpoint(service.handle, security=security, mutating=True))
    app.router.add_get("/lorawb/generate", endpoint(service.status_route, security=security, mutating=False))
    app.on_cleanup.append(_closer(service))


def add_generation(app: web.Application, pipeline: str, library, *, security, queue_size: int = DEFAULT_QUEUE,
                   limits: Limits = DEFAULT_LIMITS) -> GenerationService:
    """Load ``pipeline`` (a clear :class:`~lorawb_core.errors.UsageError` when it does not load), mount the
    generation routes on ``app``, and preload ``LORAWB_PRELOAD``'s stable IDs into the shared cache after the
    start-up scan."""
    from .generate import load_pipeline

    pipe = load_pipeline(pipeline)
    pipe.set_progress_bar_config(disable=True)
    service = GenerationService(pipe, library, limits=limits, queue_size=queue_size)
    register_generate_routes(app, service, security=security)

    async def preload(app: web.Application) -> None:
        from ..cache import preload_ids_from_env

        ids = preload_ids_from_env()
        if ids:
            threading.Thread(target=_preload, args=(library, ids), name="lorawb-preload", daemon=True).start()

    app.on_startup.append(preload)
    return service


def _preload(library, ids: list[str]) -> None:
    import logging

    from ..cache import default_cache
    from ..refs import resolve_entry

    log = logging.getLogger("lorawb")
    library.wait()
    paths = []
    for sid in ids:
        try:
            paths.append(library.with_db(resolve_entry, sid).path)
        except LorawbError as exc:
            log.warning("lorawb: LORAWB_PRELOAD %s: %s", sid, exc)
    for problem in default_cache().preload(paths):
        log.warning("lorawb: preload: %s", problem)


def _closer(service: GenerationService):
    async def close(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, service.close)

    return close
