"""Library invariants (``lorawb check``): one PASS/FAIL line per invariant, with the offending count."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field

from sqlite_utils import Database

from ..errors import UnknownLayout
from ..layouts import get_layout
from .stable_ids import parse_id


@dataclass
class CheckResult:
    name: str
    ok: bool
    value: int  # how many rows break the invariant (0 when it holds)
    detail: str
    examples: list[str] = field(default_factory=list)  # a few offenders (paths, IDs)

    def line(self) -> str:
        tail = f"  e.g. {', '.join(self.examples[:3])}" if self.examples else ""
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name:<22} {self.value:>6}  {self.detail}{tail}"


def _result(name: str, bad: list[str], detail: str) -> CheckResult:
    return CheckResult(name, not bad, len(bad), detail, bad[:5])


def _col(db: Database, sql: str, args: list | None = None) -> list[str]:
    return [str(r[0]) for r in db.execute(sql, args or [])]


def check_blocks(db: Database) -> list[str]:
    """Rows whose block rows are not exactly their layout's blocks (ready), or that have any (not ready)."""
    have: dict[int, set[str]] = {}
    for lora_id, block_id in db.execute("SELECT lora_id, block_id FROM blocks"):
        have.setdefault(lora_id, set()).add(block_id)
    bad = []
    for row_id, path, state, layout_id in db.execute("SELECT id, path, scan_state, layout_id FROM loras"):
        blocks = have.get(row_id, set())
        if state != "ready":
            if blocks:
                bad.append(f"{path} ({state} with {len(blocks)} block rows)")
            continue
        try:
            expected = set(get_layout(layout_id).block_ids) if layout_id else None
        except UnknownLayout:
            expected = None
        if expected is None or blocks != expected:
            bad.append(f"{path} ({len(blocks)} blocks, layout {layout_id} has "
                       f"{len(expected) if expected is not None else 'none'})")
    return bad


def _fts_in_sync(db: Database) -> list[str]:
    try:
        db.execute("INSERT INTO loras_fts(loras_fts, rank) VALUES ('integrity-check', 1)")
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    return []


def run_checks(db: Database, *, paths: bool = True) -> list[CheckResult]:
    """Every invariant of a healthy library; ``paths=False`` skips the file-system test."""
    results = [
        _result("layout", _col(db, "SELECT path FROM loras WHERE layout_id IS NULL AND NOT (scan_state = 'error' "
                                   "AND coalesce(error, '') != '')"),
                "LoRAs without a layout (unreadable files with a reason are exempt)"),
        _result("error_reasons", _col(db, "SELECT path FROM loras WHERE scan_state = 'error' "
                                          "AND coalesce(error, '') = ''"), "unreadable files without a reason"),
        _result("states", _col(db, "SELECT path FROM loras WHERE scan_state NOT IN ('pending', 'ready', 'error')"),
                "rows in an unknown scan state"),
        _result("stable_id_unique", _col(db, "SELECT stable_id FROM loras WHERE stable_id IS NOT NULL "
                                             "GROUP BY stable_id HAVING count(*) > 1"), "duplicate stable IDs"),
        _result("stable_id_assigned",
                _col(db, "SELECT path FROM loras WHERE stable_id IS NULL AND family IS NOT NULL") +
                [s for s in _col(db, "SELECT stable_id FROM loras WHERE stable_id IS NOT NULL") if not parse_id(s)],
                "readable LoRAs without a well-formed stable ID"),
        _result("stable_id_sequences", _sequence_gaps(db), "IDs numbered beyond their prefix's sequence"),
        _result("known_ids_unbound", _col(db, "SELECT k.stable_id FROM known_ids k JOIN loras l "
                                              "ON l.stable_id = k.stable_id"), "ledger IDs also held by a row"),
        _result("blocks_match_layout", check_blocks(db),
                "LoRAs whose block rows are not exactly their layout's blocks (or pending ones with blocks)"),
        _result("orphans", _col(db, "SELECT 'block ' || lora_id || '/' || block_id FROM blocks "
                                    "WHERE lora_id NOT IN (SELECT id FROM loras)") +
                _col(db, "SELECT 'profile ' || id FROM profiles WHERE lora_id IS NOT NULL "
                         "AND lora_id NOT IN (SELECT id FROM loras)") +
                _col(db, "SELECT 'details ' || lora_id FROM lora_details WHERE lora_id NOT IN (SELECT id FROM loras)"),
                "block/profile/detail rows without their LoRA"),
        _result("fts_in_sync", _fts_in_sync(db), "search index out of step with the table"),
        _result("foreign_keys", _col(db, "SELECT \"table\" || ' rowid ' || rowid FROM pragma_foreign_key_check"),
                "foreign key violations"),
        _result("sqlite_integrity", [r for r in _col(db, "PRAGMA quick_check") if r != "ok"], "SQLite quick_check"),
    ]
    if paths:
        gone = [p for p in _col(db, "SELECT path FROM loras WHERE missing = 0") if not os.path.isfile(p)]
        results.append(_result("paths_exist", gone, "present LoRAs whose file is gone (run lorawb index)"))
    return results


def _sequence_gaps(db: Database) -> list[str]:
    last = {r[0]: r[1] for r in db.execute("SELECT prefix, last FROM id_sequences")}
    bad = []
    for sid in _col(db, "SELECT stable_id FROM loras WHERE stable_id IS NOT NULL UNION ALL "
                        "SELECT stable_id FROM known_ids"):
        parsed = parse_id(sid)
        if parsed and parsed[1] > last.get(parsed[0], 0):
            bad.append(sid)
    return bad
