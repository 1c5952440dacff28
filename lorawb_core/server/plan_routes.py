"""Planning batches over HTTP (for the panel's Preview / Missing previews / A-B / XY dialogs), the preview settings,
and finishing a batch the runner has run (bound by :mod:`.routes`).

``POST /lorawb/plans/previews|ab|xy`` plan from the library and ``preview_config.json`` and queue the batch through
:meth:`~lorawb_core.server.job_routes.JobRoutes.enqueue` (the runner starts by itself); ``"dry_run": true`` returns
the plan (cells, labels, skipped LoRAs with reasons) without queueing, so a dialog can show what it would run.
``POST /lorawb/batches/{batch_id}/finish`` writes the previews / grid / ablation report of a finished batch.
``GET|PUT /lorawb/batch-settings`` read and replace the preview settings (validated, written atomically).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..batch.settings import parse_preview_config
from .http import BadRequest, read_json

MAX_LIST = 10_000


def _list(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name) or []
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise BadRequest(f"'{name}' must be a list of strings.", field=name)
    if len(value) > MAX_LIST:
        raise BadRequest(f"'{name}' holds more than {MAX_LIST} values.", field=name)
    return [str(v) for v in value]


def _common(body: dict[str, Any]) -> dict[str, Any]:
    from ..batch.settings import coerce
    from ..batch.templates import UserTemplate

    overrides = body.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise BadRequest("'overrides' must be an object of preview settings.", field="overrides")
    template = body.get("template")
    if template is not None and not isinstance(template, dict):
        raise BadRequest("'template' must be an API-format workflow (a JSON object).", field="template")
    return {"overrides": coerce(overrides, "overrides"),
            "template": UserTemplate(template, "the template") if template else None}


def plan_summary(planned: Any) -> dict[str, Any]:
    """What a dialog shows before queueing: kind, title, the cells, the LoRAs left out and why."""
    plan = planned.plan
    return {"kind": plan.kind, "title": plan.title, "spec": plan.spec, "count": len(plan.items),
            "items": [{"key": i.key, "label": i.label, "group": i.group, "params": i.params} for i in plan.items],
            "skipped": [{"item": s.item, "reason": s.reason} for s in planned.skipped]}


class PlanRoutes:
    """Needs ``self.service``, ``run_db``/``run`` (LibraryRoutes) and ``enqueue`` (JobRoutes)."""

    async def _plan_and_queue(self, request: web.Request, build) -> dict[str, Any]:
        from ..batch.settings import load_preview_config

        body = await read_json(request, required=True)
        common = _common(body)
        config = await self.run(load_preview_config)
        planned = await self.run_db(lambda db: build(db, body, config=config, **common))
        summary = plan_summary(planned)
        if body.get("dry_run") or not planned.plan.items:
            return {"plan": summary, "batch": None}
        queued = await self.enqueue(planned.plan)
        return {"plan": summary, **queued}

    async def plan_previews(self, request: web.Request) -> dict[str, Any]:
        from ..batch.planners import plan_previews

        def build(db: Any, body: dict[str, Any], **kw: Any):
            return plan_previews(db, _list(body, "ids"), missing=bool(body.get("missing")),
                                 filter_text=str(body.get("filter") or ""), force=bool(body.get("force")), **kw)

        return await self._plan_and_queue(request, build)

    async def plan_ab(self, request: web.Request) -> dict[str, Any]:
        from ..batch.planners import plan_ab

        def build(db: Any, body: dict[str, Any], **kw: Any):
            return plan_ab(db, _list(body, "stack"), strengths=_list(body, "strengths"),
                           profiles=_list(body, "profiles"), confirm=bool(body.get("confirm")), **kw)

        return await self._plan_and_queue(request, build)

    async def plan_xy(self, request: web.Request) -> dict[str, Any]:
        from ..batch.planners import Axis, plan_ablation, plan_xy

        def build(db: Any, body: dict[str, Any], **kw: Any):
            stack, confirm = _list(body, "stack"), bool(body.get("confirm"))
            if body.get("ablate"):
                mode = body["ablate"] if isinstance(body["ablate"], str) else "mute"
                return plan_ablation(db, stack, mode=mode, confirm=confirm, **kw)
            if not isinstance(body.get("x"), str):
                raise BadRequest("'x' must be an axis like \"strength=0,0.5,1\" (or set \"ablate\").", field="x")
            y = body.get("y")
            if y is not None and not isinstance(y, str):
                raise BadRequest("'y' must be an axis like \"profile=ALL,INS,OUTD\".", field="y")
            return plan_xy(db, stack, Axis.parse(body["x"]), Axis.parse(y) if y else None, confirm=confirm, **kw)

        return await self._plan_and_queue(request, build)

    async def finish_batch(self, request: web.Request) -> dict[str, Any]:
        from ..batch.finish import finish_batch
        from .job_routes import _id, runner_for

        batch_id = _id(request, "batch_id")
        body = await read_json(request)
        queue = runner_for(self.service).queue
        force = body.get("force")
        done = await self.run_db(lambda db: finish_batch(queue, batch_id, db, force=None if force is None
                                                         else bool(force)))
        return done.to_dict()

    async def get_batch_settings(self, request: web.Request) -> dict[str, Any]:
        from ..batch.settings import load_preview_config

        return _settings_view(await self.run(load_preview_config))

    async def put_batch_settings(self, request: web.Request) -> dict[str, Any]:
        from ..batch.settings import load_preview_config, preview_config_path, save_preview_config

        body = await read_json(request, required=True)
        config = parse_preview_config(body, "the settings")
        await self.run(save_preview_config, config, preview_config_path())
        return _settings_view(await self.run(load_preview_config))


def _settings_view(config: Any) -> dict[str, Any]:
    from ..families import FAMILIES

    resolved = {code: config.settings_for(code).to_dict() for code, fam in FAMILIES.items() if fam.template}
    return {"path": str(config.path) if config.path else None, "config": config.to_dict(), "resolved": resolved,
            "placeholders": ["{triggers}", "{name}"]}
