"""``organize --undo [RUN]``: every file of a run back where it was, what the run created removed unless a person
edited it since, the index entries dropped. The undo is itself a journaled run (kind ``undo``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from ..errors import OrganizeError
from ..library.db import immediate
from . import journal
from .files import INDEX_NAME, index_bytes, read_index
from .lock import organize_lock
from .moves import sha256_of


@dataclass
class UndoResult:
    run_id: int
    undone_run: int
    restored: int = 0  # files moved back
    removed: list[str] = field(default_factory=list)  # files and folders the run had created
    kept: list[str] = field(default_factory=list)  # what stays, with the reason

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run_id, "undone_run": self.undone_run, "restored": self.restored,
                "removed": self.removed, "kept": self.kept}


def _target(db: Database, run: int | None) -> dict[str, Any]:
    if run is None:
        row = next(db.query("SELECT * FROM organize_runs WHERE kind = 'organize' AND state IN ('done', 'failed', "
                            "'interrupted') ORDER BY id DESC LIMIT 1"), None)
        if row is None:
            raise OrganizeError("there is no organize run to undo (lorawb organize --json lists the runs).")
        return row
    row = next(db.query("SELECT * FROM organize_runs WHERE id = ?", [run]), None)
    if row is None or row["kind"] != "organize":
        raise OrganizeError(f"run {run} is not an organize run of this library; see `lorawb organize --runs`.")
    if row["state"] == "undone":
        raise OrganizeError(f"run {run} is already undone.")
    return row


def _undo_move(db: Database, run_id: int, step: journal.Step, result: UndoResult) -> None:
    if not os.path.lexists(step.dst):
        if step.src and os.path.lexists(step.src) and sha256_of(step.src) == step.sha256:
            return  # already back (an undo interrupted after this file)
        result.kept.append(f"{step.dst}: gone since the run (moved or deleted by hand); nothing to put back")
        return
    if step.sha256 and sha256_of(step.dst) != step.sha256:
        result.kept.append(f"{step.dst}: changed since the run; left where it is")
        return
    if step.src is None or os.path.lexists(step.src):
        result.kept.append(f"{step.dst}: another file is now at {step.src}; left where it is")
        return
    os.makedirs(os.path.dirname(step.src), exist_ok=True)
    journal.move(db, run_id, step.dst, step.src, step.sha256, root=None)
    result.restored += 1


def _undo_write(db: Database, run_id: int, step: journal.Step, result: UndoResult) -> None:
    if os.path.basename(step.dst) == INDEX_NAME:
        return  # the index loses this run's entries below, whatever else changed in it
    if not os.path.exists(step.dst):
        return
    if sha256_of(step.dst) != step.written_sha:
        result.kept.append(f"{step.dst}: edited since the run; kept")
        return
    if step.prior is not None:
        journal.write(db, run_id, step.dst, step.prior.encode("utf-8"))
    else:
        journal.remove(db, run_id, step.dst)
        result.removed.append(step.dst)


def _drop_entries(db: Database, run_id: int, target: dict[str, Any], done: list[journal.Step]) -> None:
    root = target["root"]
    index = read_index(root)
    for step in done:
        if step.action == "move" and step.entry is not None:
            index["loras"].pop(step.entry["folder"], None)
            index["rejected"].pop(os.path.relpath(step.dst, root).replace(os.sep, "/"), None)
    index_steps = [s for s in done if s.action == "write" and os.path.basename(s.dst) == INDEX_NAME]
    created = bool(index_steps) and index_steps[0].prior is None
    path = os.path.join(root, INDEX_NAME)
    if created and not index["loras"] and not index["rejected"]:
        if os.path.exists(path):
            journal.remove(db, run_id, path)
    elif os.path.exists(path):
        journal.write(db, run_id, path, index_bytes(index))


def undo(db: Database, db_path: str, run: int | None = None) -> UndoResult:
    """Undo organize run ``run`` (default: the last one not undone)."""
    with organize_lock(db_path, f"organize --undo {run or ''}".strip()):
        journal.recover(db)
        target = _target(db, run)
        run_id = journal.start_run(db, "undo", target["root"], target["drop_dir"], target["rule"],
                                   undoes=target["id"])
        result = UndoResult(run_id=run_id, undone_run=target["id"])
        done = journal.steps(db, target["id"], "done")
        for step in reversed(done):
            if step.action == "move":
                _undo_move(db, run_id, step, result)
            elif step.action == "write":
                _undo_write(db, run_id, step, result)
            elif step.action == "mkdir":
                try:
                    journal.rmdir(db, run_id, step.dst)
                    result.removed.append(step.dst)
                except OSError:
                    result.kept.append(f"{step.dst}: the folder holds other files now; kept")
        _drop_entries(db, run_id, target, done)
        with immediate(db):
            db.execute("UPDATE organize_steps SET state = 'undone' WHERE run_id = ? AND state = 'done'",
                       [target["id"]])
        journal.finish_run(db, target["id"], "undone")
        journal.finish_run(db, run_id, "done", result.to_dict())
        return result
