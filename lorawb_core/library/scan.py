"""Scanning the library in two phases, resumable at any point.

Phase (a), *structure* (:func:`scan`): list the roots (one ``stat`` per file), compare size, mtime_ns and inode with
the database; only new and changed files have their header read (in worker processes for big batches). Rows are
written in batches of ``batch_size`` per transaction; vanished files are marked ``missing``, never deleted; renames
and moves inside a filesystem are followed by inode. A root that is not there (an unmounted drive) marks its rows
missing. Files still being written (modified in the last ``settle_window`` seconds and changing across a second look
``settle_wait`` seconds later) are skipped until a later scan; so are ``.part``/``.crdownload``/… downloads.

Phase (b), *tensors* (:func:`measure_pending`): every ``pending`` row gets its block strengths and hashes (the file
must look the same before and after reading it), written per small batch; a first-time addnet hash is matched with
missing rows (the file came back elsewhere: the old row and its stable_id take over) and with the ledgers.

Both phases commit as they go: a scan killed at any moment leaves a consistent database and the next scan resumes
where it stopped (unchanged files cost a ``stat``, ``pending`` rows are what phase (b) has left).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from .. import file_tasks
from ..errors import LorawbError, NotInLibrary, UsageError
from ..skipped import Skipped
from ..torch_check import NO_TORCH_SCAN, torch_available
from .db import immediate, utcnow
from .file_moves import find_moved, reconcile, relocate
from .folder_config import sync_folder_configs
from .listing import FileStat, RootListing, list_root, normalise_roots, settle, stat_file
from .previews import sync_previews
from .stable_ids import (
    LEDGER_NAME,
    IdAllocator,
    category_for,
    category_mapping,
    claim_known,
    ledger_for,
    load_ledger,
    read_ledger,
    write_ledger,
)


@dataclass
class ScanProgress:
    """What a progress callback receives: ``phase`` is ``walk``, ``structure`` or ``tensors``."""

    phase: str
    done: int
    total: int
    path: str | None = None


@dataclass
class ScanSummary:
    roots: list[str] = field(default_factory=list)
    unavailable_roots: list[str] = field(default_factory=list)
    files: int = 0  # .safetensors files found
    unchanged: int = 0
    new: int = 0
    changed: int = 0
    moved: int = 0  # renamed/moved inside a filesystem (inode)
    restored: int = 0  # missing files that are back at their path
    vanished: int = 0  # newly marked missing
    measured: int = 0  # phase (b) rows completed
    merged: int = 0  # first-hashed files that were a missing row's content (moved by copy, restored elsewhere)
    reclaimed: int = 0  # first-hashed files that took their ID from a ledger/import
    pending: int = 0  # rows still waiting for phase (b) after this scan
    duplicates: int = 0  # groups of present files with the same addnet hash
    unstable: list[str] = field(default_factory=list)  # skipped: still being written
    partial: list[str] = field(default_factory=list)  # downloads in progress (.part, .crdownload, …)
    errors: list[Skipped] = field(default_factory=list)  # unreadable files met in this scan (item: the path)
    warnings: list[str] = field(default_factory=list)
    ledgers: list[str] = field(default_factory=list)  # ledger files written
    cancelled: bool = False
    seconds: float = 0.0


ProgressFn = Callable[[ScanProgress], None]


class _Reporter:
    """Throttled progress: at most one callback per ``interval`` seconds, plus the first and the last."""

    def __init__(self, fn: ProgressFn | None, phase: str, total: int, interval: float = 0.1) -> None:
        self.fn, self.phase, self.total, self.interval = fn, phase, total, interval
        self.done = 0
        self.last = 0.0
        self.emit(None, force=True)

    def step(self, path: str | None = None, n: int = 1) -> None:
        self.done += n
        self.emit(path, force=self.done >= self.total)

    def emit(self, path: str | None, force: bool = False) -> None:
        now = time.monotonic()
        if self.fn and (force or now - self.last >= self.interval):
            self.last = now
            self.fn(ScanProgress(self.phase, self.done, self.total, path))


def _cancelled(cancel: threading.Event | None) -> bool:
    return cancel is not None and cancel.is_set()


def _job(f: FileStat) -> file_tasks.Job:
    return (f.path, f.size, f.mtime_ns, f.inode)


# ---- phase (a) ------------------------------------------------------------------------------------------------
@dataclass
class _Plan:
    candidates: list[FileStat] = field(default_factory=list)
    restored: list[tuple[int, FileStat]] = field(default_factory=list)
    vanished: dict[str, int] = field(default_factory=dict)  # path → row id
    touched_roots: set[str] = field(default_factory=set)


def _plan(db: Database, listings: list[RootListing], full: bool, summary: ScanSummary) -> _Plan:
    plan = _Plan()
    for listing in listings:
        prefix = listing.root.rstrip(os.sep) + os.sep
        rows = {r[0]: r for r in db.execute(  # rows of this root, and rows from before roots were recorded
            "SELECT path, id, size, mtime_ns, inode, missing FROM loras WHERE root = ? "
            "OR (root IS NULL AND path > ? AND path < ?)", [listing.root, prefix, prefix[:-1] + chr(ord(os.sep) + 1)])}
        summary.files += len(listing.files)
        for path, f in listing.files.items():
            row = rows.get(path)
            if row is not None and not full and (row[2], row[3], row[4]) == f.signature:
                if row[5]:
                    plan.restored.append((row[1], f))
                else:
                    summary.unchanged += 1
                continue
            plan.candidates.append(f)
        for path, row in rows.items():
            if path not in listing.files and not row[5]:
                plan.vanished[path] = row[1]
        if plan.candidates or plan.restored or plan.vanished:
            plan.touched_roots.add(listing.root)
    return plan


def _apply_presence(db: Database, plan: _Plan, moves: list[tuple[int, FileStat]], mapping: dict[str, str],
                    summary: ScanSummary) -> None:
    """Restores, moves and vanished files in one transaction (no file content needed)."""
    now = utcnow()
    with immediate(db):
        for row_id, f in plan.restored:
            db["loras"].update(row_id, {"missing": 0, "last_seen": now, "root": f.root, "rel_path": f.rel_path})
        summary.restored += len(plan.restored)
        for row_id, f in moves:
            if db.execute("SELECT 1 FROM loras WHERE path = ?", [f.path]).fetchone():
                continue  # another scanner indexed the new path meanwhile
            relocate(db, row_id, f, category_for(f.rel_path, mapping), now)
            summary.moved += 1
        moved_ids = {row_id for row_id, _ in moves}
        gone = [row_id for row_id in plan.vanished.values() if row_id not in moved_ids]
        for i in range(0, len(gone), 500):
            part = gone[i:i + 500]
            cur = db.execute(f"UPDATE loras SET missing = 1 WHERE missing = 0 AND id IN ({','.join('?' * len(part))})",
                             part)
            summary.vanished += cur.rowcount


DETAIL_COLUMNS = ("metadata", "family_evidence")


def _save_details(db: Database, details: dict[int, dict[str, Any]]) -> None:
    if details:
        db["lora_details"].upsert_all([{"lora_id": i, **d} for i, d in details.items()], pk="lora_id")


def _split(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Row values for ``loras`` and the wide JSON for ``lora_details``."""
    return ({k: v for k, v in values.items() if k not in DETAIL_COLUMNS},
            {k: values[k] for k in DETAIL_COLUMNS if k in values})


def _rows_by_path(db: Database, paths: list[str]) -> dict[str, tuple]:
    """(id, size, mtime_ns, inode, stable_id) of the rows of ``paths`` that exist, by path: one query per 500."""
    rows: dict[str, tuple] = {}
    for i in range(0, len(paths), 500):
        part = paths[i:i + 500]
        for row in db.execute("SELECT id, size, mtime_ns, inode, stable_id, path FROM loras "
                              f"WHERE path IN ({','.join('?' * len(part))})", part):
            rows[row[5]] = tuple(row[:5])
    return rows


def _write_structure(db: Database, items: list[tuple[FileStat, dict[str, Any]]], mapping: dict[str, str],
                     full: bool, summary: ScanSummary) -> None:
    now = utcnow()
    inserts: list[dict[str, Any]] = []
    details: dict[int, dict[str, Any]] = {}
    new_details: dict[str, dict[str, Any]] = {}
    with immediate(db):
        alloc = IdAllocator(db)
        known = _rows_by_path(db, [f.path for f, _ in items])
        claims = db.execute("SELECT EXISTS (SELECT 1 FROM known_ids)").fetchone()[0]  # (IDs from a ledger/import)
        for f, res in items:
            if res.get("changed"):
                summary.unstable.append(f.path)
                continue
            category = category_for(f.rel_path, mapping)
            place = {"path": f.path, "root": f.root, "rel_path": f.rel_path, "file_name": os.path.basename(f.path),
                     "category": category, "inode": f.inode, "size": f.size, "mtime_ns": f.mtime_ns, "missing": 0,
                     "last_seen": now}
            readable = "family" in res
            if res["scan_state"] == "error":
                summary.errors.append(Skipped(f.path, res["error"]))
            row = known.get(f.path)
            if row is None:
                stable_id = None
                if readable:
                    stable_id = (claims and claim_known(db, root=f.root, rel_path=f.rel_path)) or \
                        alloc.new(res["family"], category)
                row_values, new_details[f.path] = _split({**res, **place, "stable_id": stable_id, "first_seen": now})
                inserts.append(row_values)
                summary.new += 1
                continue
            row_id = row[0]
            same = (row[1], row[2]) == (f.size, f.mtime_ns) and row[3] in (None, f.inode)
            if same and row[3] is not None and not full:  # only its root changed, or another scanner was first
                db["loras"].update(row_id, place)
                continue
            values = {**res, **place}
            if row[4] is None and readable:
                values["stable_id"] = claim_known(db, root=f.root, rel_path=f.rel_path) or alloc.new(
                    res["family"], category)
            if not same:  # new content: old hashes and strengths describe nothing any more
                values.update(sha256=None, addnet=None, autov2=None, autov3=None)
            values.update(total_norm=None, unmapped_norm=None, measured_at=None)
            db.execute("DELETE FROM blocks WHERE lora_id = ?", [row_id])
            values, details[row_id] = _split(values)
            db["loras"].update(row_id, values)
            summary.changed += 1
        if inserts:
            db["loras"].insert_all(inserts, batch_size=200)
            paths = list(new_details)
            for i in range(0, len(paths), 500):
                part = paths[i:i + 500]
                for row_id, path in db.execute(
                        f"SELECT id, path FROM loras WHERE path IN ({','.join('?' * len(part))})", part):
                    details[row_id] = new_details[path]
        _save_details(db, {k: v for k, v in details.items() if v})
        alloc.flush()


def _load_ledgers(db: Database, roots: Sequence[str], summary: ScanSummary) -> None:
    ledgers = []
    for root in roots:
        try:
            ledger = read_ledger(root)
        except LorawbError as exc:
            summary.warnings.append(str(exc))
            continue
        if ledger is not None:
            ledgers.append((root, ledger))
    if ledgers:
        with immediate(db):
            for root, ledger in ledgers:
                load_ledger(db, root, ledger)


def _write_ledgers(db: Database, roots: Sequence[str], summary: ScanSummary) -> None:
    for root in roots:
        if not os.path.isdir(root):
            continue
        try:
            path = os.path.join(root, LEDGER_NAME)
            if write_ledger(root, ledger_for(db, root)) and path not in summary.ledgers:
                summary.ledgers.append(path)
        except OSError as exc:
            summary.warnings.append(f"{root}: cannot write the ID ledger ({exc.strerror}); IDs are kept in the "
                                    "database only (lorawb ids export makes a copy).")


def _structure_phase(db: Database, listings: list[RootListing], *, full: bool, mapping: dict[str, str],
                     workers: int | None, progress: ProgressFn | None, cancel: threading.Event | None,
                     settle_window: float, settle_wait: float, batch_size: int, summary: ScanSummary) -> set[str]:
    plan = _plan(db, listings, full, summary)
    stable, moving = settle(plan.candidates, window=settle_window, wait=settle_wait)
    summary.unstable.extend(f.path for f in moving)
    moves: list[tuple[int, FileStat]] = []
    analyse: list[FileStat] = []
    known_paths = {r[0] for r in db.execute("SELECT path FROM loras")} if stable else set()
    for f in sorted(stable, key=lambda f: (f.root, f.rel_path)):
        moved = find_moved(db, f, set(plan.vanished)) if f.path not in known_paths else None
        if moved is not None and moved not in {m for m, _ in moves}:
            moves.append((moved, f))
        else:
            analyse.append(f)
    if plan.restored or moves or plan.vanished:
        _apply_presence(db, plan, moves, mapping, summary)
    reporter = _Reporter(progress, "structure", len(analyse))
    batch: list[tuple[FileStat, dict[str, Any]]] = []
    results = file_tasks.run_tasks(file_tasks.analyse, [_job(f) for f in analyse], workers, cancel, 64,
                                   share_summaries=True)
    for f, res in zip(analyse, results, strict=False):
        batch.append((f, res))
        reporter.step(f.path)
        if len(batch) >= batch_size:
            _write_structure(db, batch, mapping, full, summary)
            batch = []
    if batch:
        _write_structure(db, batch, mapping, full, summary)
    if reporter.done < len(analyse):
        summary.cancelled = True
    return plan.touched_roots | {f.root for _, f in moves}


# ---- phase (b) ------------------------------------------------------------------------------------------------
def _write_measured(db: Database, items: list[tuple[tuple, dict[str, Any]]], summary: ScanSummary) -> None:
    now = utcnow()
    with immediate(db):
        for (row_id, path, size, mtime_ns, inode), res in items:
            if res.get("changed"):
                summary.unstable.append(path)
                continue
            cur = db.execute("SELECT size, mtime_ns, inode, scan_state, missing, addnet FROM loras WHERE id = ?",
                             [row_id]).fetchone()
            if cur is None or cur[3] != "pending" or cur[4] or (cur[0], cur[1], cur[2]) != (size, mtime_ns, inode):
                continue  # another scanner finished it, or the file changed since it was listed
            blocks = res.pop("blocks", None)
            db.execute("DELETE FROM blocks WHERE lora_id = ?", [row_id])
            if blocks:
                db["blocks"].insert_all([{"lora_id": row_id, **b} for b in blocks])
            values, detail = _split({**res, "measured_at": now, "last_seen": now})
            db["loras"].update(row_id, values)
            _save_details(db, {row_id: detail} if detail else {})
            if res["scan_state"] == "error":
                summary.errors.append(Skipped(path, res["error"]))
            else:
                summary.measured += 1
            if res.get("addnet") and not cur[5]:
                outcome = reconcile(db, row_id, res["addnet"])
                summary.merged += outcome == "merged"
                summary.reclaimed += outcome == "reclaimed"


def _still_pending(db: Database, rows: list) -> list:
    ids = [r[0] for r in rows]
    pending = {r[0] for r in db.execute(
        f"SELECT id FROM loras WHERE scan_state = 'pending' AND missing = 0 AND id IN ({','.join('?' * len(ids))})",
        ids)}
    return [r for r in rows if r[0] in pending]


def measure_pending(db: Database, *, roots: Sequence[str] | None = None, workers: int | None = None,
                    progress: ProgressFn | None = None, cancel: threading.Event | None = None,
                    limit: int | None = None, ledger: bool = True, flush_seconds: float = 2.0,
                    summary: ScanSummary | None = None) -> ScanSummary:
    """Phase (b): measure every ``pending`` row (optionally only under ``roots``), resumable."""
    started = time.monotonic()
    summary = summary or ScanSummary()
    where, args = "scan_state = 'pending' AND missing = 0", []
    if roots:
        norm = normalise_roots(list(roots))
        where += f" AND root IN ({','.join('?' * len(norm))})"
        args += norm
    rows = db.execute(f"SELECT id, path, size, mtime_ns, inode, root FROM loras WHERE {where} "
                      "ORDER BY root, rel_path, id" + (f" LIMIT {int(limit)}" if limit else ""), args).fetchall()
    reporter = _Reporter(progress, "tensors", len(rows))
    n = file_tasks.default_workers(len(rows)) if workers is None else workers
    pool = file_tasks.make_pool(min(n, len(rows))) if n > 0 and len(rows) > 1 else None
    step = 8 * max(1, n)
    batch: list[tuple[tuple, dict[str, Any]]] = []
    last_flush = last_ledger = time.monotonic()
    touched: set[str] = set()
    try:
        for start in range(0, len(rows), step):
            if _cancelled(cancel):
                break
            part = _still_pending(db, rows[start:start + step])  # another scanner may have done some
            jobs = [(r[1], r[2], r[3], r[4] or 0) for r in part]
            results = pool.map(file_tasks.measure, jobs) if pool is not None else map(file_tasks.measure, jobs)
            for row, job, res in zip(part, jobs, results, strict=True):
                batch.append(((row[0], *job), res))
                if row[5]:
                    touched.add(row[5])
                reporter.emit(row[1])
            reporter.step(n=min(step, len(rows) - start))
            now = time.monotonic()
            if now - last_flush >= flush_seconds or len(batch) >= 64:
                _write_measured(db, batch, summary)
                batch, last_flush = [], now
                if ledger and now - last_ledger >= 60:
                    _write_ledgers(db, sorted(touched), summary)
                    last_ledger = now
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if batch:
        _write_measured(db, batch, summary)
    summary.cancelled |= reporter.done < len(rows)
    if ledger and touched:
        _write_ledgers(db, sorted(touched), summary)
    _finish(db, summary)
    summary.seconds += time.monotonic() - started
    return summary


def _finish(db: Database, summary: ScanSummary) -> None:
    summary.pending = db.execute("SELECT count(*) FROM loras WHERE scan_state = 'pending' AND missing = 0"
                                 ).fetchone()[0]
    summary.duplicates = db.execute("SELECT count(*) FROM (SELECT addnet FROM loras WHERE addnet IS NOT NULL AND "
                                    "missing = 0 GROUP BY addnet HAVING count(*) > 1)").fetchone()[0]


# ---- entry points ---------------------------------------------------------------------------------------------
def scan(db: Database, roots: Sequence[str], *, full: bool = False, structure_only: bool = False,
         workers: int | None = None, progress: ProgressFn | None = None, cancel: threading.Event | None = None,
         categories: dict[str, str] | None = None, ledger: bool = True, settle_window: float = 2.0,
         settle_wait: float = 0.5, batch_size: int = 500) -> ScanSummary:
    """Index ``roots``: phase (a) always, then phase (b) unless ``structure_only`` or PyTorch is not installed (a
    warning in the summary says so).

    Args:
        roots: library folders (a missing one marks its files missing).
        full: re-read every file (not only new and changed ones) and measure them all again.
        workers: worker processes; None = automatic (inline for small batches, else up to 2), 0 = inline.
        progress: called with :class:`ScanProgress` (throttled to ~10 calls/s per phase).
        cancel: set it to stop after the current batch (everything done so far is kept).
        categories: extra folder → category code mapping for new stable IDs (see :mod:`.stable_ids`).
        ledger: read and write ``.lorawb-ids.json`` in each root.
        settle_window / settle_wait: files modified within ``settle_window`` seconds get a second look after
            ``settle_wait`` seconds and are skipped if they changed.
    """
    started = time.monotonic()
    if not roots:
        raise UsageError("No library roots given; pass the LoRA folders to index.")
    mapping = category_mapping(categories)
    summary = ScanSummary(roots=normalise_roots(list(roots)))
    if not structure_only and not torch_available():  # phase (a) needs no torch: do it, say what is left
        structure_only = True
        summary.warnings.append(NO_TORCH_SCAN)
    walk = _Reporter(progress, "walk", len(summary.roots))
    listings = []
    for root in summary.roots:
        listing = list_root(root)
        listings.append(listing)
        summary.partial.extend(listing.partial)
        summary.warnings.extend(listing.problems)
        walk.step(root)
    available = [li for li in listings if li.available]
    summary.unavailable_roots = [li.root for li in listings if not li.available]
    if summary.unavailable_roots:
        with immediate(db):
            for root in summary.unavailable_roots:
                summary.vanished += db.execute("UPDATE loras SET missing = 1 WHERE root = ? AND missing = 0",
                                               [root]).rowcount
    if ledger:
        _load_ledgers(db, [li.root for li in available], summary)
    touched = _structure_phase(db, available, full=full, mapping=mapping, workers=workers, progress=progress,
                               cancel=cancel, settle_window=settle_window, settle_wait=settle_wait,
                               batch_size=batch_size, summary=summary)
    if not summary.cancelled:
        sync_previews(db, available)
    if ledger:
        _write_ledgers(db, [li.root for li in available
                            if li.root in touched or not os.path.exists(os.path.join(li.root, LEDGER_NAME))], summary)
    if available and not summary.cancelled:  # hand edits of organized folders' config.yaml
        summary.warnings.extend(sync_folder_configs(db, [li.root for li in available]))
    if not structure_only and not summary.cancelled:
        measure_pending(db, roots=[li.root for li in available], workers=workers, progress=progress, cancel=cancel,
                        ledger=ledger, summary=summary)
    else:
        _finish(db, summary)
    summary.seconds = time.monotonic() - started
    return summary


def reindex(db: Database, stable_id: str, *, structure_only: bool = False,
            categories: dict[str, str] | None = None, ledger: bool = True) -> ScanSummary:
    """Read one LoRA again (both phases, or only the structure), whatever its state."""
    row = db.execute("SELECT id, path, root, rel_path FROM loras WHERE stable_id = ?",
                     [stable_id.strip().upper()]).fetchone()
    if row is None:
        raise NotInLibrary(f"No LoRA with stable ID {stable_id!r} in the library; find it with `lorawb search`.")
    row_id, path, root, rel_path = row
    root = root or os.path.dirname(path)
    summary = ScanSummary(roots=[root])
    f = stat_file(path, root, rel_path or os.path.basename(path))
    if f is None:
        with immediate(db):
            summary.vanished += db.execute("UPDATE loras SET missing = 1 WHERE id = ? AND missing = 0",
                                           [row_id]).rowcount
        summary.warnings.append(f"{path}: the file is gone; it is marked missing and keeps its ID.")
        _finish(db, summary)
        return summary
    summary.files = 1
    if not structure_only and not torch_available():
        structure_only = True
        summary.warnings.append(NO_TORCH_SCAN)
    _write_structure(db, [(f, file_tasks.analyse(_job(f)))], category_mapping(categories), True, summary)
    if not structure_only:
        _write_measured(db, [((row_id, *_job(f)), file_tasks.measure(_job(f)))], summary)
    if ledger:
        _write_ledgers(db, [root], summary)
    _finish(db, summary)
    return summary
