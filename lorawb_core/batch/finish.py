"""Finishing a batch the queue ran: the finisher its kind calls for, fed from the queue's stored plan and results.

``preview`` → sidecars next to the LoRAs (and the library rows point at them); ``ab``/``xy`` → a labelled grid;
``ablation`` → the grid plus the per-block report (``<grid stem>.ablation.json``). The outcome is JSON-friendly for
the CLI's ``--json`` and the panel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from ..errors import UsageError
from .grid import ablation_report, render_grid, write_report
from .images import finish_previews
from .work import BatchPlan, WorkItem


@dataclass
class Finished:
    batch_id: int
    kind: str
    title: str
    previews: list[dict[str, Any]] = field(default_factory=list)
    grid: dict[str, Any] | None = None
    ablation: dict[str, Any] | None = None
    report_path: str | None = None
    report_text: str | None = None
    failed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "kind": self.kind, "title": self.title, "previews": self.previews,
                "grid": self.grid, "ablation": self.ablation, "report_path": self.report_path, "failed": self.failed}


def plan_of(queue: Any, batch_id: int) -> BatchPlan:
    """The plan a batch was queued with, rebuilt from the job table (items in queue order, workflows included)."""
    batch = queue.batch(batch_id)
    items = tuple(WorkItem(key=j.key, workflow=queue.job(j.id, workflow=True).workflow or {},
                           output_node=j.output_node, group=j.group or "", label=j.label or "", params=j.params or {})
                  for j in queue.jobs(batch_id))
    return BatchPlan(batch.kind, batch.title or "", batch.spec, items)  # type: ignore[arg-type]


def finish_batch(queue: Any, batch_id: int, db: Database | None = None, *, out: str | Path | None = None,
                 force: bool | None = None) -> Finished:
    """Run the finisher of a finished batch. ``out``: the grid's path (default ``<batch folder>/grid.png``);
    ``force``: replace existing previews (default: as queued); ``db``: the library, to record new previews."""
    batch = queue.batch(batch_id)
    if not batch.finished:
        left = sum(batch.counts.get(s, 0) for s in ("queued", "submitted", "running"))
        raise UsageError(f"batch {batch_id} still has {left} job(s) to run; `lorawb jobs run --batch {batch_id}` "
                         "runs them.")
    plan = plan_of(queue, batch_id)
    results = queue.results(batch_id)
    done = Finished(batch_id, plan.kind, plan.title)
    if plan.kind == "preview":
        outcomes = finish_previews(plan, results, force=force)
        if db is not None:
            from ..library.previews import set_preview

            for o in outcomes:
                if o.path:
                    set_preview(db, o.stable_id, o.path)
        done.previews = [o.to_dict() for o in outcomes]
        done.failed = sum(1 for o in outcomes if o.error)
        return done
    grid_path = Path(out) if out else queue.batch_dir(batch_id) / "grid.png"
    grid = render_grid(plan, results, grid_path)
    done.grid = grid.to_dict()
    done.failed = grid.failed
    if plan.kind == "ablation":
        report = ablation_report(plan, results)
        done.ablation = report.to_dict()
        done.report_text = report.text()
        done.report_path = str(write_report(report, grid_path.with_suffix(".ablation.json")))
    return done
