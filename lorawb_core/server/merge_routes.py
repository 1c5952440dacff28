"""``POST /lorawb/merge``: a merge as a background job (progress events, then the new stable ID and the report);
``GET /lorawb/merge/{job_id}`` its status.

Events: ``lorawb.merge_progress`` ``{job, done, total, module}`` (throttled), ``lorawb.merge_done`` ``{job,
stable_id, path, report}``, ``lorawb.merge_error`` ``{job, type, message}``.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .background import BackgroundJobs
from .http import BadRequest, body_str, json_response, read_json

MAX_MERGE = 16
_RANK_MODES = ("rank", "concat", "sv_fro", "sv_ratio", "sv_cumulative")
_background = BackgroundJobs("merge", "the merge")
_jobs = _background.jobs
_ids = itertools.count(1)
_lock = _background.lock


def _number(body: Mapping[str, Any], name: str, default: float | None, kind: type = float) -> Any:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and int(value) != value):
        raise BadRequest(f"'{name}' must be a {'whole ' if kind is int else ''}number.", field=name)
    return kind(value)


def _rule(body: Mapping[str, Any]):
    from ..errors import UsageError
    from ..merge import RankRule

    mode = body.get("rank_mode", "rank")
    if mode not in _RANK_MODES:
        raise BadRequest(f"'rank_mode' must be one of {', '.join(_RANK_MODES)}.", field="rank_mode")
    rank, conv = _number(body, "rank", 32, int), _number(body, "conv_rank", None, int)
    try:
        if mode == "concat":
            return RankRule()
        if mode == "rank":
            return RankRule(rank=rank, conv_rank=conv or rank)
        return RankRule(rank=rank, conv_rank=conv, dynamic=mode, param=_number(body, "sv_param", 0.99))
    except UsageError as exc:
        raise BadRequest(str(exc), field="rank") from None


def _items(body: Mapping[str, Any]):
    from ..merge import MergeInput

    entries = body.get("entries")
    if not isinstance(entries, list) or not entries or len(entries) > MAX_MERGE:
        raise BadRequest(f"'entries' must be a list of 1 to {MAX_MERGE} {{lora, strength_model?, strength_clip?, "
                         "weights?}} objects.", field="entries")
    items = []
    for i, e in enumerate(entries):
        if not isinstance(e, Mapping) or not isinstance(e.get("lora"), str) or not e["lora"].strip():
            raise BadRequest(f"entry {i + 1} needs a 'lora' (a stable ID like SD1-CHR-001).", field=f"entries[{i}].lora")
        weights = e.get("weights")
        if weights is not None and not isinstance(weights, str):
            raise BadRequest(f"entry {i + 1}: 'weights' must be text.", field=f"entries[{i}].weights")
        items.append(MergeInput(e["lora"].strip(), _number(e, "strength_model", 1.0),
                                _number(e, "strength_clip", None), weights or None))
    return items


class MergeRoutes:
    """Merge jobs over the service's library (output into its first root)."""

    async def start_merge(self, request: web.Request) -> web.Response:
        body = await read_json(request, required=True)
        items, rule = _items(body), _rule(body)
        name = body_str(body, "filename", required=True)
        if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
            raise BadRequest("'filename' must be a name inside the library's first root.", field="filename")
        dtype = body.get("dtype", "fp16")
        metadata = body.get("metadata", "merge")
        if dtype not in ("fp16", "bf16", "fp32"):
            raise BadRequest("'dtype' must be fp16, bf16 or fp32.", field="dtype")
        if metadata not in ("merge", "new", "first"):
            raise BadRequest("'metadata' must be merge, new or first.", field="metadata")
        roots = self.service.roots()
        if not roots:
            raise BadRequest("the library has no root folder to write the merged file into.", field="filename")
        path = os.path.join(roots[0], name if name.endswith(".safetensors") else name + ".safetensors")
        if os.path.exists(path):
            raise BadRequest(f"{path} already exists; a merge never overwrites: choose another name.",
                             field="filename")
        job = f"merge-{next(_ids)}"
        with _lock:
            _jobs[job] = {"job": job, "state": "running", "done": 0, "total": 0, "path": path,
                          "started_at": time.time()}
        threading.Thread(target=self._run_merge, args=(job, items, path, rule, dtype, metadata), daemon=True,
                         name=f"lorawb-{job}").start()
        return json_response(dict(_jobs[job]), 202)

    async def merge_status(self, request: web.Request) -> dict[str, Any]:
        return _background.status(request.match_info["job_id"])

    def _run_merge(self, job: str, items, path: str, rule, dtype: str, metadata: str) -> None:
        from ..merge import merge_loras

        progress = _background.progress(self.service, job, "module")
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            report = self.service.with_db(lambda db: merge_loras(items, path, rule=rule, dtype=dtype,
                                                                 metadata=metadata, db=db, progress=progress))
        except Exception as exc:  # the thread reports every failure as data
            _background.failed(self.service, job, exc)
            return
        data = {"stable_id": report.stable_id, "path": report.path, "report": report.to_dict(modules=False),
                "text": report.text()}
        with _lock:
            _jobs[job].update(state="done", finished_at=time.time(), **data)
        self.service._send("lorawb.merge_done", {"job": job, **data})
