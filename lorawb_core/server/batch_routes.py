"""What the panel's jobs view and results viewer read: a batch with its cells, and the batch's image files.

Routes (bound by :mod:`.routes`):

* ``GET /lorawb/batches/{batch_id}`` — the batch (counts, kind, spec), one cell per job (``key``, ``label``,
  ``params``, ``state``, ``error``, ``image``: a path relative to the batch folder or null) and, once the batch was
  finished, what finishing wrote (``finished``: previews, the grid and its cells, the ablation report; paths made
  relative to the batch folder where they lie inside it).
* ``GET /lorawb/batches/{batch_id}/file?path=grid.png`` — an image of the batch folder (the path is resolved with
  symlinks and must stay inside that folder; only PNG/JPEG/WebP are served).

A batch finishes by itself: :func:`finish_when_done` is called by the job runner for every job that reaches a final
state; when that was the batch's last job it runs the batch's finisher (previews next to the LoRAs, the grid, the
ablation report) on a thread of its own, keeps the outcome as ``finished.json`` in the batch folder (atomically) and
sends ``lorawb.batch_done`` ``{batch, kind, title, failed, previews, grid, ablation}``; a finisher that fails sends
``lorawb.batch_done`` with ``error``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from .http import BadRequest, HttpError, q_str
from .job_routes import JobRunner, _id, runner_for
from .preview_routes import CACHE_HEADERS, MIME, _inside

log = logging.getLogger("lorawb")
FINISHED_FILE = "finished.json"
_finishing: set[tuple[int, int]] = set()
_finishing_lock = threading.Lock()


class NoResultFile(HttpError):
    """The batch has no such image (or the path leaves its folder)."""

    status = 404


def _relative(path: str | None, base: Path) -> str | None:
    if not path:
        return None
    if not _inside(path, [str(base)]):
        return None
    return os.path.relpath(os.path.realpath(path), os.path.realpath(base)).replace(os.sep, "/")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def finished_view(done: dict[str, Any], base: Path) -> dict[str, Any]:
    """A finisher's outcome with its file paths relative to the batch folder (for the panel's file URLs)."""
    grid = done.get("grid")
    view = {**done}
    if grid:
        view["grid"] = {**grid, "file": _relative(grid.get("path"), base),
                        "cells": [{**c, "file": _relative(c.get("image"), base)} for c in grid.get("cells", [])]}
    if done.get("report_path"):
        view["report_file"] = _relative(done["report_path"], base)
    return view


def finish_when_done(runner: Any, batch_id: int) -> None:
    """Finish ``batch_id`` (once, on a thread) if none of its jobs is left to run; the outcome goes to an event."""
    key = (id(runner.service), batch_id)
    with _finishing_lock:
        if key in _finishing:
            return
        _finishing.add(key)
    threading.Thread(target=_finish, args=(runner, batch_id, key), daemon=True, name="lorawb-finish").start()


def _finish(runner: Any, batch_id: int, key: tuple[int, int]) -> None:
    from ..batch.finish import finish_batch
    from ..errors import LorawbError

    service, queue = runner.service, runner.queue
    try:
        batch = queue.batch(batch_id)
        if not batch.finished:
            return
        base = queue.batch_dir(batch_id)
        try:
            done = service.with_db(lambda db: finish_batch(queue, batch_id, db)).to_dict()
        except LorawbError as exc:
            service._send("lorawb.batch_done", {"batch": batch_id, "kind": batch.kind, "title": batch.title,
                                                "error": str(exc)})
            return
        view = finished_view(done, base)
        _write_json(base / FINISHED_FILE, view)
        service._send("lorawb.batch_done", {"batch": batch_id, **{k: view.get(k) for k in (
            "kind", "title", "failed", "previews", "grid", "ablation")}})
    except Exception as exc:  # reported as data; the batch stays as it is and can be finished again
        log.exception("lorawb: finishing batch %s failed", batch_id)
        service._send("lorawb.batch_done", {"batch": batch_id, "error": f"finishing failed ({type(exc).__name__}: "
                                            f"{exc}); POST /lorawb/batches/{batch_id}/finish tries again."})
    finally:
        with _finishing_lock:
            _finishing.discard(key)


def batch_view(queue: Any, batch_id: int) -> dict[str, Any]:
    """The batch, its cells and (when finished) the finisher's outcome, for the panel."""
    batch = queue.batch(batch_id)
    base = queue.batch_dir(batch_id)
    cells = []
    for job in queue.jobs(batch_id):
        cells.append({"job": job.id, "key": job.key, "label": job.label, "params": job.params, "state": job.state,
                      "error": job.error, "server": job.server, "attempts": job.attempts,
                      "image": _relative(job.images[0], base) if job.images else None})
    finished = None
    path = base / FINISHED_FILE
    if path.is_file():
        try:
            finished = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            finished = None
    return {"batch": batch.to_dict(), "cells": cells, "finished": finished}


def result_file(queue: Any, batch_id: int, rel: str) -> str:
    base = queue.batch_dir(batch_id)
    if not rel or rel.startswith(("/", "\\")) or "\0" in rel:
        raise BadRequest("'path' must be a file path inside the batch folder, like grid.png.", field="path")
    path = base / rel
    if not _inside(str(path), [str(base)]):
        raise NoResultFile(f"{rel[:80]!r} is outside batch {batch_id}'s folder; it is not served.", field="path")
    if os.path.splitext(rel)[1].lower() not in MIME:
        raise NoResultFile(f"{rel[:80]!r} is not an image of batch {batch_id}.", field="path")
    if not path.is_file():
        raise NoResultFile(f"Batch {batch_id} has no file {rel[:80]!r}.", field="path")
    return str(path)


class BatchRoutes:
    """Needs ``self.service``, ``run``/``run_db`` (LibraryRoutes); uses the job runner's queue (JobRoutes)."""

    async def get_batch(self, request: web.Request) -> dict[str, Any]:
        return await self.run(batch_view, runner_for(self.service).queue, _id(request, "batch_id"))

    async def batch_file(self, request: web.Request) -> web.StreamResponse:
        batch_id = _id(request, "batch_id")
        rel = q_str(request, "path", "", max_len=400) or ""
        path = await self.run(result_file, runner_for(self.service).queue, batch_id, rel)
        return web.FileResponse(path, headers={**CACHE_HEADERS, "Content-Type": MIME[os.path.splitext(path)[1]
                                                                                      .lower()]})


JobRunner.job_ended = staticmethod(finish_when_done)

__all__ = ["BatchRoutes", "FINISHED_FILE", "batch_view", "finish_when_done", "finished_view", "result_file"]
