"""Kill -9 at chosen points of a real ``lorawb organize`` process (24 kills, same filesystem and tmpfs → disk):
after each kill every original file exists (exactly once on one filesystem), and the next run completes."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from organize_helpers import TEMP_SUFFIXES, copies, make_drop, run

from lorawb_core.library.db import open_library
from lorawb_core.organize import moves, reconcile

ROOT_DIR = Path(__file__).resolve().parents[1]
TALLY: dict[str, int] = {"killed": 0, "completed_anyway": 0}


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAWB_CONFIG", str(tmp_path / "no-config.json"))


def _crash_points(tmp_path: Path, drop_base: Path, monkeypatch) -> int:
    """How many crash points a whole run passes (counted in-process on the same drop)."""
    drop, root = drop_base / "count-drop", tmp_path / "count-root"
    root.mkdir()
    make_drop(drop, 4)
    monkeypatch.setenv("LORAWB_ORGANIZE_CRASH_AT", str(10**9))
    moves._crash["count"] = 0
    run(tmp_path / "count.sqlite3", drop, root)
    monkeypatch.delenv("LORAWB_ORGANIZE_CRASH_AT")
    return moves._crash["count"]


def _kill_run(tmp_path: Path, drop_base: Path, point: int, cross_fs: bool) -> None:
    drop, root, db_path = drop_base / f"drop-{point}", tmp_path / f"root-{point}", tmp_path / f"lib-{point}.sqlite3"
    root.mkdir()
    originals = make_drop(drop, 4)
    proc = subprocess.run([sys.executable, "-m", "lorawb_core", "organize", "--drop", str(drop), "--root", str(root),
                           "--db", str(db_path), "--no-preview"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT_DIR), "LORAWB_ORGANIZE_CRASH_AT": str(point)})
    if proc.returncode == -signal.SIGKILL:
        TALLY["killed"] += 1
    else:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        TALLY["completed_anyway"] += 1
    counts = copies(drop, root)
    for path, digest in originals.items():  # nothing lost; on one filesystem nothing doubled either
        assert counts[digest] >= 1, f"kill at point {point}: {path} is gone"
        if not cross_fs:
            assert counts[digest] == 1, f"kill at point {point}: {path} exists {counts[digest]} times"
    # the next run recovers the interrupted step and finishes the drop
    result = run(db_path, drop, root)
    assert result.error is None
    counts = copies(drop, root)
    assert all(counts[d] == 1 for d in originals.values()), f"after the rerun of kill point {point}"
    assert not list(drop.glob("*.safetensors")) and not [p for p in root.rglob("*") if p.name.endswith(TEMP_SUFFIXES)]
    with open_library(db_path) as db:
        assert not db.execute("SELECT count(*) FROM organize_steps WHERE state = 'pending'").fetchone()[0]
        assert db.execute("SELECT count(*) FROM loras WHERE missing = 0").fetchone()[0] == 4
        report = reconcile(db, str(db_path), str(root))
        assert report.ok and not report.warnings, report.to_dict()


@pytest.mark.parametrize("cross_fs", [False, True], ids=["same-fs", "tmpfs-to-disk"])
def test_kill_9_at_random_points_loses_nothing_and_the_rerun_finishes(tmp_path, monkeypatch, cross_fs):
    if cross_fs:
        drop_base = Path("/dev/shm") / f"lorawb-crash-{os.getpid()}"
        assert Path("/dev/shm").stat().st_dev != tmp_path.stat().st_dev, "the test needs tmpfs at /dev/shm"
        drop_base.mkdir()
    else:
        drop_base = tmp_path
    try:
        total = _crash_points(tmp_path, drop_base, monkeypatch)
        assert total >= 12
        kills = 12
        points = sorted(random.Random(10 + cross_fs).sample(range(1, total + 1), kills))
        for point in points:
            _kill_run(tmp_path, drop_base, point, cross_fs)
        print(f"crash tally ({'tmpfs → disk' if cross_fs else 'same filesystem'}, {total} crash points): "
              f"{TALLY}, points {points}")
    finally:
        if cross_fs:
            shutil.rmtree(drop_base)
    assert TALLY["killed"] >= kills
