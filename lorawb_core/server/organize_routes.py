"""The organize routes: ``POST /lorawb/organize/plan`` (a dry run), ``POST /lorawb/organize`` (a background run
with progress, like the scan), ``GET /lorawb/organize/{job_id}``, ``GET /lorawb/organize/runs``, ``POST
/lorawb/organize/undo``, ``GET``/``POST /lorawb/organize/reconcile`` (``POST`` with ``{"fix": true}`` repairs).

``POST /lorawb/organize`` and ``/undo`` need ``{"confirm": true}``. The drop folder and the root are never taken
from the request: the drop is ``organize.drop`` (else the loose files
at the top of the first root) and the root the library's first root. A request may pick the rule (``into``).

Events: ``lorawb.organize_progress`` ``{job, done, total, path}``, ``lorawb.organize_done`` ``{job, result}``,
``lorawb.organize_error`` ``{job, type, message}``.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from typing import Any

from aiohttp import web

from .background import BackgroundJobs
from .http import BadRequest, body_bool, body_str, json_response, read_json

_background = BackgroundJobs("organize", "organize")
_jobs = _background.jobs
_ids = itertools.count(1)
_lock = _background.lock


def _confirmed(body: dict[str, Any], what: str) -> None:
    """The routes that move files act only on ``{"confirm": true}`` (an empty or stray POST changes nothing)."""
    if body.get("confirm") is not True:
        raise BadRequest(f"{what}; send {{\"confirm\": true}} to go ahead.", field="confirm")


class OrganizeRoutes:
    """Organize over the service's library and its first root."""

    def _organize_options(self, body: dict[str, Any], *, dry_run: bool):
        from ..organize.cli import organize_settings
        from ..organize.run import OrganizeOptions
        from ..organize.slugs import check_rule

        roots = self.service.roots()
        if not roots:
            raise BadRequest("the library has no root folder to organize into.", field="root")
        settings = organize_settings()
        rule = body_str(body, "into") or settings.into
        from ..errors import UsageError

        try:
            check_rule(rule)
        except UsageError as exc:
            raise BadRequest(str(exc), field="into") from None
        return OrganizeOptions(drop=settings.drop or roots[0], root=roots[0], rule=rule,
                               families=set(settings.families), dry_run=dry_run,
                               preview=not body_bool(body, "no_preview", default=True))

    def _organize_db(self, fn, *args, **kwargs):
        db = self.service.db()
        try:
            return fn(db, str(self.service.db_path), *args, **kwargs)
        finally:
            db.close()

    async def organize_plan(self, request: web.Request) -> dict[str, Any]:
        from ..organize import organize

        options = self._organize_options(await read_json(request), dry_run=True)
        result = await self.run(self._organize_db, organize, options)
        return result.to_dict()

    async def start_organize(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        _confirmed(body, "organize moves the drop folder's files: look at POST /lorawb/organize/plan first")
        options = self._organize_options(body, dry_run=False)
        with _lock:
            if any(j["state"] == "running" for j in _jobs.values()):
                running = next(j for j in _jobs.values() if j["state"] == "running")
                return json_response({**running, "started": False}, 409)
            job = f"organize-{next(_ids)}"
            _jobs[job] = {"job": job, "state": "running", "done": 0, "total": 0, "path": None,
                          "started_at": time.time()}
        threading.Thread(target=self._run_organize, args=(job, options), daemon=True, name=f"lorawb-{job}").start()
        return json_response({**_jobs[job], "started": True}, 202)

    async def organize_status(self, request: web.Request) -> dict[str, Any]:
        return _background.status(request.match_info["job_id"])

    async def organize_runs(self, request: web.Request) -> dict[str, Any]:
        def runs(db):
            return list(db.query("SELECT id, kind, state, started, finished, root, drop_dir, undoes, summary FROM "
                                 "organize_runs ORDER BY id DESC LIMIT 20"))

        return {"runs": await self.run_db(runs)}

    async def organize_undo(self, request: web.Request) -> dict[str, Any]:
        from ..organize import undo

        body = await read_json(request)
        _confirmed(body, "undo moves a run's files back")
        run = body.get("run")
        if run is not None and (isinstance(run, bool) or not isinstance(run, int)):
            raise BadRequest("'run' must be a run number (see GET /lorawb/organize/runs).", field="run")
        result = await self.run(self._organize_db, undo, run)
        return result.to_dict()

    async def organize_reconcile(self, request: web.Request) -> dict[str, Any]:
        from ..organize import reconcile

        fix = request.method == "POST" and body_bool(await read_json(request), "fix", default=False)
        roots = self.service.roots()
        if not roots:
            raise BadRequest("the library has no root folder to reconcile.", field="root")
        report = await self.run(functools.partial(self._organize_db, reconcile, roots[0], fix=fix))
        return report.to_dict()

    def _run_organize(self, job: str, options) -> None:
        from ..organize import organize

        progress = _background.progress(self.service, job, "path", keep_detail=True)
        try:
            result = self._organize_db(organize, options, progress)
        except Exception as exc:  # the thread reports every failure as data
            _background.failed(self.service, job, exc)
            return
        if result.preview_batch is not None:  # preview jobs were queued: run them on this server's runner
            from .job_routes import runner_for

            runner_for(self.service).start()
        data = result.to_dict()
        with _lock:
            _jobs[job].update(state="error" if result.error else "done", error=result.error, result=data,
                              finished_at=time.time())
        self.service._send("lorawb.organize_done", {"job": job, "result": data})
