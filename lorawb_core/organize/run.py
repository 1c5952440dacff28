"""``organize``: recover what an interrupted run left, test and plan the drop, move every file through the journal,
then write the folders' ``config.yaml``, the rejected files' reasons, ``index.json`` and ``preview_config.json``."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from ..errors import OrganizeError
from ..library.db import immediate, utcnow
from . import journal
from .files import (
    CONFIG_NAME,
    INDEX_NAME,
    PREVIEW_CONFIG_NAME,
    PREVIEW_SUFFIXES,
    REASON_SUFFIX,
    config_bytes,
    config_for,
    index_bytes,
    merged_config,
    preview_config_bytes,
    read_config,
    read_index,
    reason_text,
)
from .lock import organize_lock
from .moves import fsync_dir
from .plan import Plan, PlanItem, build_plan
from .verdict import COMPATIBLE

ProgressFn = Callable[[int, int, str], None]
PREVIEWS_PLANNED = "previews: each organized LoRA without a preview gets a preview job in the batch queue."


@dataclass
class OrganizeOptions:
    drop: str
    root: str
    rule: str = "{slug}/"
    families: set[str] = field(default_factory=set)
    dry_run: bool = False
    preview: bool = True
    settle_window: float = 2.0
    settle_wait: float = 0.5


@dataclass
class OrganizeResult:
    plan: Plan
    run_id: int | None = None
    recovered: list[str] = field(default_factory=list)
    moved: int = 0  # files moved (LoRAs and sidecars)
    organized: int = 0  # compatible LoRAs in their folders
    rejected: int = 0  # incompatible and duplicate LoRAs
    error: str | None = None
    preview_batch: int | None = None  # the batch queue's batch of preview jobs this run queued
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run_id, "plan": self.plan.to_dict(), "recovered": self.recovered, "moved": self.moved,
                "organized": self.organized, "rejected": self.rejected, "error": self.error, "notes": self.notes,
                "preview_batch": self.preview_batch}


def _entry(item: PlanItem, root: str) -> dict[str, Any]:
    v = item.verdict
    lora = item.moves[0]
    preview = next((os.path.basename(m.dst) for m in item.moves[1:]
                    if m.dst.lower().endswith(PREVIEW_SUFFIXES)), "")
    return {"verdict": v.verdict, "name": v.name, "filename": os.path.basename(lora.dst),
            "folder": os.path.relpath(item.folder, root).replace(os.sep, "/"), "family": v.family,
            "variant": v.variant, "layout": v.layout, "trigger_words": v.trigger_words, "sha256": v.sha256,
            "reason": v.reason or None, "duplicate_of": v.duplicate_of, "preview_image": preview,
            "original_path": v.path}


def _stable_id(db: Database, path: str) -> str | None:
    row = db.execute("SELECT stable_id FROM loras WHERE path = ?", [path]).fetchone()
    return row[0] if row else None


def finish_pending(db: Database, root: str) -> list[str]:
    """For every run on ``root`` whose index is not written yet: each organized LoRA's ``config.yaml`` (merged
    with one already there), each rejected file's reason, then ``index.json`` and ``preview_config.json``. Runs
    interrupted before this point are completed here by the next run. Returns the files written."""
    written: list[str] = []
    runs = [r[0] for r in db.execute("SELECT id FROM organize_runs WHERE root = ? AND indexed = 0 AND kind = "
                                     "'organize' AND state != 'running' ORDER BY id", [root])]
    current = [r[0] for r in db.execute("SELECT id FROM organize_runs WHERE root = ? AND indexed = 0 AND kind = "
                                        "'organize' AND state = 'running' AND pid = ?", [root, os.getpid()])]
    index = read_index(root)
    todo = [(run_id, step) for run_id in runs + current for step in journal.steps(db, run_id, "done")
            if step.action == "move" and step.entry is not None]
    if any(_stable_id(db, step.dst) is None and step.entry["verdict"] == COMPATIBLE for _, step in todo):
        _index_new(db, root)
    for run_id, step in todo:
        entry = dict(step.entry, stable_id=_stable_id(db, step.dst))
        folder = os.path.dirname(step.dst)
        if entry["verdict"] == COMPATIBLE:
            path = os.path.join(folder, CONFIG_NAME)
            existing = read_config(path)
            config = merged_config(existing, config_for(entry, utcnow()))
            if existing != config:
                journal.write(db, run_id, path, config_bytes(config))
                written.append(path)
            index["loras"][entry["folder"]] = {k: entry[k] for k in (
                "name", "filename", "folder", "stable_id", "family", "variant", "layout", "sha256",
                "preview_image")} | {"compatible": True, "config": CONFIG_NAME}
        else:
            path = step.dst[:-len(".safetensors")] + REASON_SUFFIX
            if not os.path.exists(path):
                journal.write(db, run_id, path, reason_text(entry))
                written.append(path)
            rel = os.path.relpath(step.dst, root).replace(os.sep, "/")
            was = os.path.relpath(os.path.dirname(entry["original_path"]), root).replace(os.sep, "/")
            if index["loras"].get(was, {}).get("filename") == os.path.basename(entry["original_path"]):
                del index["loras"][was]  # --clean moved an organized LoRA aside
            index["rejected"][rel] = {k: entry[k] for k in ("filename", "verdict", "reason", "duplicate_of",
                                                            "stable_id", "sha256")} | {"compatible": False}
    if runs or current:
        index["updated"] = utcnow()
        index_path = os.path.join(root, INDEX_NAME)
        journal.write(db, (runs + current)[-1], index_path, index_bytes(index))
        written.append(index_path)
        preview = preview_config_bytes(root)
        if preview is not None:
            journal.write(db, (runs + current)[-1], os.path.join(root, PREVIEW_CONFIG_NAME), preview)
            written.append(os.path.join(root, PREVIEW_CONFIG_NAME))
        with immediate(db):
            for run_id in runs + current:
                db["organize_runs"].update(run_id, {"indexed": 1})
    return written


def _apply(db: Database, run_id: int, plan: Plan, result: OrganizeResult, progress: ProgressFn | None) -> None:
    total = sum(len(i.moves) for i in plan.items)
    for item in plan.items:
        journal.mkdir(db, run_id, item.folder)
        for n, m in enumerate(item.moves):
            if not os.path.lexists(m.src):
                result.notes.append(f"{m.src}: gone before it was moved (left out)")
                continue
            journal.move(db, run_id, m.src, m.dst, m.sha256 or None, root=plan.root,
                         entry=_entry(item, plan.root) if n == 0 else None)
            result.moved += 1
            if progress:
                progress(result.moved, total, m.dst)
        fsync_dir(item.folder)
        if item.verdict.verdict == COMPATIBLE:
            result.organized += 1
        else:
            result.rejected += 1
    fsync_dir(plan.drop)


def organize(db: Database, db_path: str, options: OrganizeOptions, progress: ProgressFn | None = None
             ) -> OrganizeResult:
    """Organize ``options.drop`` into ``options.root`` (see the package docstring). Holds the organize lock."""
    from .verdict import allowed_families

    root = os.path.abspath(options.root)
    with organize_lock(db_path, f"organize {options.drop}"):
        recovered = journal.recover(db)
        finish_pending(db, root)  # what interrupted runs left unwritten
        plan = build_plan(db, options.drop, root, options.rule, allowed_families(sorted(options.families)),
                          settle_window=options.settle_window, settle_wait=options.settle_wait)
        result = OrganizeResult(plan=plan, recovered=recovered)
        if options.dry_run:
            if options.preview:
                result.notes.append(PREVIEWS_PLANNED)
            return result
        result.run_id = journal.start_run(db, "organize", root, plan.drop, plan.rule)
        state = "done"
        try:
            _apply(db, result.run_id, plan, result, progress)
        except OrganizeError as exc:
            result.error, state = str(exc), "failed"
        finally:
            finish_pending(db, root)
            journal.finish_run(db, result.run_id, state, {"moved": result.moved, "organized": result.organized,
                                                          "rejected": result.rejected, "error": result.error})
        if options.preview and state == "done":
            queue_previews(db, db_path, result)
        return result


def queue_previews(db: Database, db_path: str, result: OrganizeResult) -> None:
    """Each LoRA this run organized that has no preview gets a preview job in the batch queue (one batch; the
    preview settings as for ``lorawb previews``); what cannot be previewed is noted with its reason. Queuing never
    fails the run: the files are in place whatever happens here."""
    from ..batch.planners import plan_previews
    from ..batch.queue import BatchQueue
    from ..batch.settings import load_preview_config
    from ..errors import LorawbError

    paths = [item.moves[0].dst for item in result.plan.items
             if item.verdict.verdict == COMPATIBLE and item.moves and os.path.isfile(item.moves[0].dst)]
    if not paths:
        return
    try:
        planned = plan_previews(db, paths, config=load_preview_config())
    except LorawbError as exc:
        result.notes.append(f"previews: not queued: {exc}")
        return
    result.notes += [f"previews: {s.item}: {s.reason}" for s in planned.skipped
                     if "already has a preview" not in s.reason]
    if not planned.plan.items:
        return
    queue = BatchQueue(db_path)
    try:
        result.preview_batch = queue.submit(planned.plan)
    finally:
        queue.close()
    n = len(planned.plan.items)
    result.notes.append(f"previews: batch {result.preview_batch} queued ({n} job(s)): `lorawb jobs run --batch "
                        f"{result.preview_batch}` runs it, then `lorawb finish {result.preview_batch}` saves them.")


def _index_new(db: Database, root: str) -> None:
    """Moved LoRAs the library did not hold yet get their rows (and stable IDs) where they now are."""
    from ..library.scan import scan

    scan(db, [root], structure_only=True, settle_window=0.0, ledger=True)
