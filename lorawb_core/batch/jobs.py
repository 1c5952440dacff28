"""The job table: batches and their jobs in the library database (migration ``m008_batch_jobs``).

A job is one :class:`~lorawb_core.batch.work.WorkItem` and moves through these states::

    queued ──claim──▶ submitted ──(server starts it)──▶ running ──▶ done | failed
       ▲                  │                                 │
       └──── requeue (5xx, timeout, server died or restarted: backoff, attempts counted) ◀──┘
    queued | submitted | running ──cancel──▶ cancelled;   failed | cancelled ──retry──▶ queued

Every state change is one ``BEGIN IMMEDIATE`` statement guarded by what the writer believes (``state`` and, for a
job in flight, its ``prompt_id``), so two dispatchers, a cancel from the panel and a crashed run never make a job
complete twice: :func:`finish` of a superseded attempt changes nothing and returns False.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from ..errors import JobNotFound, UsageError
from ..library.db import immediate, utcnow
from .work import BatchPlan, ItemResult

STATES = ("queued", "submitted", "running", "done", "failed", "cancelled")
IN_FLIGHT = ("submitted", "running")
FINAL = ("done", "failed", "cancelled")
MAX_ATTEMPTS = 4


@dataclass(frozen=True)
class Job:
    id: int
    batch_id: int
    key: str
    label: str
    state: str
    attempts: int
    output_node: str
    group: str = ""
    server: str | None = None
    prompt_id: str | None = None
    """The id we chose for the current attempt (sent to the server; also its marker in ``extra_data``)."""
    server_prompt_id: str | None = None
    """The id the server answered with (the same as ``prompt_id`` on current ComfyUI); None until it answered."""
    error: str | None = None
    created: str | None = None
    submitted_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    images: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    workflow: dict[str, Any] | None = None

    def to_dict(self, *, workflow: bool = False) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in ("id", "batch_id", "key", "label", "state", "attempts", "group",
                                              "server", "prompt_id", "server_prompt_id", "error", "created",
                                              "submitted_at", "started_at", "finished_at", "params")}
        data["images"] = list(self.images)
        data["output_node"] = self.output_node
        if workflow:
            data["workflow"] = self.workflow
        return data

    def result(self) -> ItemResult:
        return ItemResult(self.key, tuple(Path(p) for p in self.images),
                          None if self.state == "done" else (self.error or self.state), self.server,
                          self.server_prompt_id or self.prompt_id)


@dataclass(frozen=True)
class Batch:
    id: int
    kind: str
    title: str
    spec: dict[str, Any]
    created: str
    results_dir: str | None
    counts: dict[str, int]
    """Jobs per state (every state present, zeros included)."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> bool:
        return all(self.counts[s] == 0 for s in ("queued",) + IN_FLIGHT)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "title": self.title, "spec": self.spec, "created": self.created,
                "results_dir": self.results_dir, "counts": self.counts, "total": self.total,
                "finished": self.finished}


_COLUMNS = ("id, batch_id, item_key, label, state, attempts, output_node, grp, server, prompt_id, server_prompt_id, "
            "error, created, submitted_at, started_at, finished_at, images, params")


def _job(row: Sequence[Any], workflow: str | None = None) -> Job:
    (id_, batch, key, label, state, attempts, node, grp, server, pid, spid, error, created, sub, start, fin, images,
     params) = row
    return Job(id_, batch, key, label or "", state, attempts, node, grp or "", server, pid, spid, error, created, sub,
               start, fin, tuple(json.loads(images or "[]")), json.loads(params or "{}"),
               json.loads(workflow) if workflow else None)


def add_batch(db: Database, plan: BatchPlan, results_dir: str | Path | None = None) -> int:
    """Store ``plan`` as a new batch with one queued job per item; returns the batch id."""
    keys = [item.key for item in plan.items]
    if not keys:
        raise UsageError(f"the {plan.kind} batch {plan.title!r} has no items: nothing to queue.")
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise UsageError(f"item keys must be unique within a batch; repeated: {', '.join(dupes[:5])}.")
    now = utcnow()
    with immediate(db):
        cur = db.execute("INSERT INTO batches (kind, title, spec, results_dir, created) VALUES (?, ?, ?, ?, ?)",
                         [plan.kind, plan.title, json.dumps(plan.spec), str(results_dir) if results_dir else None,
                          now])
        batch_id = int(cur.lastrowid)
        db.conn.executemany(
            "INSERT INTO jobs (batch_id, item_key, label, params, workflow, output_node, grp, state, attempts, "
            "created) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?)",
            [(batch_id, it.key, it.label, json.dumps(it.params, default=str), json.dumps(it.workflow),
              it.output_node, it.group, now) for it in plan.items])
    return batch_id


def get_batch(db: Database, batch_id: int) -> Batch:
    row = db.execute("SELECT id, kind, title, spec, created, results_dir FROM batches WHERE id = ?",
                     [batch_id]).fetchone()
    if row is None:
        raise JobNotFound(f"no batch {batch_id} in the job table (`lorawb jobs list` shows the batches).")
    counts = dict.fromkeys(STATES, 0)
    for state, n in db.execute("SELECT state, count(*) FROM jobs WHERE batch_id = ? GROUP BY state", [batch_id]):
        counts[state] = n
    return Batch(row[0], row[1], row[2] or "", json.loads(row[3]), row[4], row[5], counts)


def list_batches(db: Database, *, limit: int = 50) -> list[Batch]:
    ids = [r[0] for r in db.execute("SELECT id FROM batches ORDER BY id DESC LIMIT ?", [limit])]
    return [get_batch(db, i) for i in ids]


def list_jobs(db: Database, *, batch_id: int | None = None, states: Iterable[str] = (), limit: int = 1000,
              offset: int = 0) -> list[Job]:
    where, args = [], []
    if batch_id is not None:
        where.append("batch_id = ?")
        args.append(batch_id)
    states = list(states)
    for s in states:
        if s not in STATES:
            raise UsageError(f"unknown job state {s!r}; states are {', '.join(STATES)}.")
    if states:
        where.append(f"state IN ({', '.join('?' * len(states))})")
        args += states
    sql = f"SELECT {_COLUMNS} FROM jobs {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY id LIMIT ? OFFSET ?"
    return [_job(r) for r in db.execute(sql, [*args, limit, offset])]


def get_job(db: Database, job_id: int, *, workflow: bool = False) -> Job:
    row = db.execute(f"SELECT {_COLUMNS}, workflow FROM jobs WHERE id = ?", [job_id]).fetchone()
    if row is None:
        raise JobNotFound(f"no job {job_id} in the job table (`lorawb jobs list` shows the batches and jobs).")
    return _job(row[:-1], row[-1] if workflow else None)


def claim(db: Database, server: str, *, batch_id: int | None = None, prefer_group: str | None = None,
          avoid_groups: Iterable[str] = ()) -> Job | None:
    """Take the next queued job for ``server`` (state ``submitted``, a fresh ``prompt_id``, attempts + 1) before it is
    sent, so a crash after the send finds it in flight. Same-group jobs first, then groups nobody else is on."""
    avoid = list(avoid_groups)
    order = ["(grp = ?) DESC"] if prefer_group is not None else []
    args: list[Any] = [prefer_group] if prefer_group is not None else []
    if avoid:
        order.append(f"(grp IN ({', '.join('?' * len(avoid))})) ASC")
        args += avoid
    where, wargs = "state = 'queued' AND (not_before IS NULL OR not_before <= ?)", [time.time()]
    if batch_id is not None:
        where += " AND batch_id = ?"
        wargs.append(batch_id)
    with immediate(db):
        row = db.execute(f"SELECT id FROM jobs WHERE {where} ORDER BY {', '.join(order + ['batch_id', 'id'])} "
                         "LIMIT 1", [*wargs, *args]).fetchone()
        if row is None:
            return None
        db.execute("UPDATE jobs SET state = 'submitted', server = ?, prompt_id = ?, server_prompt_id = NULL, "
                   "attempts = attempts + 1, submitted_at = ?, started_at = NULL, error = NULL WHERE id = ?",
                   [server, str(uuid.uuid4()), utcnow(), row[0]])
    return get_job(db, row[0], workflow=True)


def _guarded(db: Database, job: Job, sets: str, args: Sequence[Any], states: Sequence[str] = IN_FLIGHT) -> bool:
    with immediate(db):
        cur = db.execute(f"UPDATE jobs SET {sets} WHERE id = ? AND prompt_id IS ? AND state IN "
                         f"({', '.join('?' * len(states))})", [*args, job.id, job.prompt_id, *states])
    return cur.rowcount == 1


def sent(db: Database, job: Job, server_prompt_id: str) -> bool:
    """The server accepted the job's prompt under ``server_prompt_id``."""
    return _guarded(db, job, "server_prompt_id = ?", [server_prompt_id])


def started(db: Database, job: Job) -> bool:
    return _guarded(db, job, "state = 'running', started_at = coalesce(started_at, ?)", [utcnow()],
                    ("submitted",))


def finish(db: Database, job: Job, images: Sequence[str | Path]) -> bool:
    """Done with ``images``; False (nothing changed) if this attempt was superseded or cancelled meanwhile."""
    return _guarded(db, job, "state = 'done', images = ?, finished_at = ?, error = NULL",
                    [json.dumps([str(p) for p in images]), utcnow()])


def fail(db: Database, job: Job, error: str) -> bool:
    return _guarded(db, job, "state = 'failed', error = ?, finished_at = ?", [error, utcnow()])


def requeue(db: Database, job: Job, error: str, *, delay: float = 0.0, count: bool = True,
            max_attempts: int = MAX_ATTEMPTS) -> str:
    """Back to ``queued`` after ``delay`` seconds, or ``failed`` once ``max_attempts`` are used; returns the new
    state (``""`` when the job was no longer this attempt's). ``count=False`` gives the attempt back (the server
    died: not the job's fault)."""
    out_of_tries = count and job.attempts >= max_attempts
    if out_of_tries:
        ok = fail(db, job, f"{error} (gave up after {job.attempts} attempts)")
        return "failed" if ok else ""
    ok = _guarded(db, job, "state = 'queued', error = ?, not_before = ?, attempts = attempts - ?",
                  [error, time.time() + delay, 0 if count else 1])
    return "queued" if ok else ""


def in_flight(db: Database, *, batch_id: int | None = None) -> list[Job]:
    return list_jobs(db, batch_id=batch_id, states=IN_FLIGHT, limit=1_000_000)


def _selection(db: Database, verb: str, batch_id: int | None, job_ids: Iterable[int]) -> tuple[str, list[int]]:
    """The WHERE clause and its arguments for a batch or the given jobs, each checked to exist."""
    ids = list(job_ids)
    if batch_id is None and not ids:
        raise UsageError(f"say what to {verb}: a batch id or job ids.")
    for i in ids:
        get_job(db, i)
    if batch_id is not None:
        get_batch(db, batch_id)
        return "batch_id = ?", [batch_id]
    return f"id IN ({', '.join('?' * len(ids))})", ids


def cancel(db: Database, *, batch_id: int | None = None, job_ids: Iterable[int] = ()) -> list[Job]:
    """Cancel queued and in-flight jobs of a batch or the given jobs; returns the jobs that were in flight (their
    server still has to drop or interrupt them)."""
    where, args = _selection(db, "cancel", batch_id, job_ids)
    with immediate(db):
        flying = [_job(r) for r in db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE {where} AND state IN "
                                              "('submitted', 'running')", args)]
        db.execute(f"UPDATE jobs SET state = 'cancelled', finished_at = ? WHERE {where} AND state IN "
                   "('queued', 'submitted', 'running')", [utcnow(), *args])
    return flying


def retry(db: Database, *, batch_id: int | None = None, job_ids: Iterable[int] = ()) -> int:
    """Put failed and cancelled jobs of a batch (or the given jobs) back in the queue; returns how many."""
    where, args = _selection(db, "retry", batch_id, job_ids)
    with immediate(db):
        cur = db.execute(f"UPDATE jobs SET state = 'queued', attempts = 0, error = NULL, not_before = NULL, "
                         f"finished_at = NULL WHERE {where} AND state IN ('failed', 'cancelled')", args)
    return cur.rowcount


def pending_count(db: Database, *, batch_id: int | None = None) -> int:
    sql = "SELECT count(*) FROM jobs WHERE state IN ('queued', 'submitted', 'running')"
    return db.execute(sql + (" AND batch_id = ?" if batch_id is not None else ""),
                      [batch_id] if batch_id is not None else []).fetchone()[0]


def next_ready_in(db: Database, *, batch_id: int | None = None) -> float | None:
    """Seconds until the next queued job's backoff ends (0 when one is ready now, None when none is queued)."""
    sql = "SELECT min(coalesce(not_before, 0)) FROM jobs WHERE state = 'queued'"
    row = db.execute(sql + (" AND batch_id = ?" if batch_id is not None else ""),
                     [batch_id] if batch_id is not None else []).fetchone()
    return None if row[0] is None else max(0.0, row[0] - time.time())
