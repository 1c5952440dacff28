"""The organize journal in the library database: a run row, and a step row written (and committed) *before* each
step acts, marked ``done`` after. A run killed at any point leaves ``pending`` steps that :func:`recover` completes
(the move happened: the target holds the source's hash) or rolls back (it did not: partial copies removed).

Step actions: ``mkdir`` (a folder the run created), ``move`` (a LoRA or sidecar; ``entry`` holds the index entry of
a LoRA), ``write`` (a file the run wrote; ``prior`` holds what was there before, ``written_sha`` what was written).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from ..library.db import immediate, utcnow
from ..library.file_moves import relocate
from ..library.listing import stat_file
from ..library.stable_ids import category_for
from .moves import PART_SUFFIX, crash_point, move_file, sha256_of, write_atomic


@dataclass
class Step:
    id: int
    run_id: int
    seq: int
    action: str
    src: str | None
    dst: str
    sha256: str | None
    entry: dict[str, Any] | None
    prior: str | None
    written_sha: str | None
    state: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Step:
        return cls(row["id"], row["run_id"], row["seq"], row["action"], row["src"], row["dst"], row["sha256"],
                   json.loads(row["entry"]) if row["entry"] else None, row["prior"], row["written_sha"],
                   row["state"])


def start_run(db: Database, kind: str, root: str, drop: str | None, rule: str | None, undoes: int | None = None) -> int:
    with immediate(db):
        return db["organize_runs"].insert({"kind": kind, "state": "running", "started": utcnow(), "root": root,
                                           "drop_dir": drop, "rule": rule, "pid": os.getpid(), "undoes": undoes,
                                           "indexed": 0}).last_pk


def finish_run(db: Database, run_id: int, state: str, summary: dict[str, Any] | None = None) -> None:
    with immediate(db):
        db["organize_runs"].update(run_id, {"state": state, "finished": utcnow(),
                                            "summary": json.dumps(summary) if summary is not None else None})


def _begin(db: Database, run_id: int, action: str, dst: str, **values: Any) -> int:
    with immediate(db):
        seq = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM organize_steps WHERE run_id = ?", [run_id]).fetchone()[0]
        if "entry" in values and values["entry"] is not None:
            values["entry"] = json.dumps(values["entry"], ensure_ascii=False)
        step_id = db["organize_steps"].insert({"run_id": run_id, "seq": seq, "action": action, "dst": dst,
                                               "state": "pending", **values}).last_pk
    crash_point()
    return step_id


def _end(db: Database, step_id: int, state: str, note: str | None = None, **values: Any) -> None:
    with immediate(db):
        db["organize_steps"].update(step_id, {"state": state, "note": note, **values})


def follow_move(db: Database, src: str, dst: str, root: str | None) -> None:
    """The library row of ``src`` now points at ``dst``: same row, same stable ID (inside the caller's transaction)."""
    row = db.execute("SELECT id FROM loras WHERE path = ?", [src]).fetchone()
    if row is None or db.execute("SELECT 1 FROM loras WHERE path = ?", [dst]).fetchone():
        return
    if root is None or not (dst == root or dst.startswith(root.rstrip(os.sep) + os.sep)):
        root = os.path.dirname(dst)
    rel = os.path.relpath(dst, root).replace(os.sep, "/")
    f = stat_file(dst, root, rel)
    if f is not None:
        relocate(db, row[0], f, category_for(rel), utcnow())


def move(db: Database, run_id: int, src: str, dst: str, sha256: str | None, *, root: str | None,
         entry: dict[str, Any] | None = None) -> None:
    """One journaled move; the library row follows in the transaction that marks the step done."""
    st = os.stat(src)
    step_id = _begin(db, run_id, "move", dst, src=src, sha256=sha256, size=st.st_size, mtime_ns=st.st_mtime_ns,
                     entry=entry)
    try:
        move_file(src, dst, sha256)
    except BaseException:
        _end(db, step_id, "rolled_back", "the move failed; the file stayed where it was")
        raise
    with immediate(db):
        follow_move(db, src, dst, root)
        db["organize_steps"].update(step_id, {"state": "done"})
    crash_point()


def mkdir(db: Database, run_id: int, path: str) -> None:
    """Create ``path`` and the missing folders above it, each journaled (undo removes them when empty)."""
    missing = []
    p = path
    while not os.path.isdir(p):
        missing.append(p)
        p = os.path.dirname(p)
    for folder in reversed(missing):
        step_id = _begin(db, run_id, "mkdir", folder)
        try:
            os.mkdir(folder)
        except OSError as exc:
            _end(db, step_id, "rolled_back", str(exc))
            from ..errors import OrganizeError

            raise OrganizeError(f"cannot create the folder {folder} ({exc.strerror}); the files stay in the drop "
                                "folder. Make the destination writable and run organize again.") from None
        _end(db, step_id, "done")


def write(db: Database, run_id: int, path: str, data: bytes, *, entry: dict[str, Any] | None = None) -> None:
    """Write a file the run creates or updates (``prior`` keeps the old text, so undo can put it back)."""
    prior = None
    if os.path.exists(path):
        with open(path, "rb") as fh:
            prior = fh.read().decode("utf-8", "replace")
    written = hashlib.sha256(data).hexdigest()
    step_id = _begin(db, run_id, "write", path, prior=prior, written_sha=written, entry=entry)
    try:
        write_atomic(path, data, durable=prior is not None)  # a new file is regenerable; a replaced one is synced
    except BaseException:
        _end(db, step_id, "rolled_back", "the write failed")
        raise
    _end(db, step_id, "done")


def remove(db: Database, run_id: int, path: str) -> None:
    """Remove a file the run being undone had written (journaled)."""
    step_id = _begin(db, run_id, "remove", path)
    os.unlink(path)
    _end(db, step_id, "done")


def rmdir(db: Database, run_id: int, path: str) -> None:
    """Remove a folder the run being undone had created; ``OSError`` when it is not empty (the step rolls back)."""
    step_id = _begin(db, run_id, "rmdir", path)
    try:
        os.rmdir(path)
    except OSError:
        _end(db, step_id, "rolled_back", "the folder is not empty")
        raise
    _end(db, step_id, "done")


def _recover_step(db: Database, step: Step, root: str | None) -> str:
    if step.action == "move":
        part = step.dst + PART_SUFFIX
        src_there = step.src is not None and os.path.lexists(step.src)
        if os.path.lexists(part) and src_there:
            os.unlink(part)
        if os.path.lexists(step.dst) and (step.sha256 is None or sha256_of(step.dst) == step.sha256):
            if src_there and not os.path.samefile(step.src, step.dst):
                os.unlink(step.src)  # the verified copy is in place: finish the cross-filesystem move
            with immediate(db):
                follow_move(db, step.src, step.dst, root)
            return "done"
        return "rolled_back" if src_there else "failed"
    if step.action == "write":
        tmp = step.dst + ".lorawb-tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        if os.path.exists(step.dst) and sha256_of(step.dst) == step.written_sha:
            return "done"
        return "rolled_back"
    if step.action in ("remove", "rmdir"):
        return "rolled_back" if os.path.lexists(step.dst) else "done"
    return "done" if os.path.isdir(step.dst) else "rolled_back"


def recover(db: Database) -> list[str]:
    """Complete or roll back the pending steps of runs that did not finish (the caller holds the organize lock, so
    no run is alive); those runs become ``interrupted``. Returns one line per step handled."""
    lines = []
    for run in list(db.query("SELECT id, root FROM organize_runs WHERE state = 'running' ORDER BY id")):
        for row in list(db.query("SELECT * FROM organize_steps WHERE run_id = ? AND state = 'pending' ORDER BY seq",
                                 [run["id"]])):
            step = Step.from_row(row)
            state = _recover_step(db, step, run["root"])
            note = "completed after an interruption" if state == "done" else (
                "rolled back after an interruption" if state == "rolled_back" else
                "after an interruption neither the source nor a verified target exists")
            _end(db, step.id, state, note)
            lines.append(f"run {run['id']}: {step.action} {step.src or ''} → {step.dst}: {note}")
        finish_run(db, run["id"], "interrupted")
    return lines


def steps(db: Database, run_id: int, state: str | None = None) -> list[Step]:
    sql = "SELECT * FROM organize_steps WHERE run_id = ?" + (" AND state = ?" if state else "") + " ORDER BY seq"
    return [Step.from_row(r) for r in db.query(sql, [run_id, *([state] if state else [])])]
