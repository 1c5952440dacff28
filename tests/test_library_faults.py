"""Faults on real database files: scanners killed with SIGKILL at random moments, several scanners at once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from library_helpers import quick_scan, tiny, tiny_library

from lorawb_core.library import run_checks
from lorawb_core.library.db import open_library
from lorawb_core.library.stable_ids import LEDGER_NAME

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and process groups are POSIX")


def index_cmd(lib: Path, db: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lorawb_core", "index", str(lib), "--db", str(db), *extra]


def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "LORAWB_CONFIG": str(tmp_path / "no-config.json"), "PYTHONPATH": str(ROOT)}


def live_in_group(pgid: int) -> list[int]:
    """Processes of a process group that are still running (zombies waiting for a reaper do not count)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(d.name))
    return out


def assert_consistent(db_path: Path, lib: Path, context: str) -> None:
    db = open_library(db_path)
    try:
        bad = [r.line() for r in run_checks(db) if not r.ok]
        assert not bad, f"{context}: {bad}"
    finally:
        db.close()
    ledger = lib / LEDGER_NAME
    if ledger.exists():
        json.loads(ledger.read_text())  # written atomically: never half a file


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigkill_at_random_points_then_check_and_resume(tmp_path):
    lib = tmp_path / "lib"
    files = tiny_library(lib, per_folder=8)
    db_path = tmp_path / "library.sqlite3"
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    for i in range(6):
        if i == 3:  # the library changes between runs as well
            files[0].unlink()
            files[1].rename(lib / "renamed.safetensors")
            for k in range(5):
                tiny(lib / "concepts" / f"new_{k}.safetensors", "sd15", 100 + k)
        workers = "2" if i in (1, 4) else "0"
        proc = subprocess.Popen(index_cmd(lib, db_path, "--workers", workers), cwd=ROOT, env=env(tmp_path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        delay = rng.uniform(0.4, 3.5)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        context = f"seed {seed}, run {i}, killed after {delay:.2f} s (rc {proc.returncode})"
        assert proc.returncode in (0, -signal.SIGKILL), f"{context}: {proc.stderr.read()}"
        proc.stderr.close()
        assert_consistent(db_path, lib, context)
        deadline = time.monotonic() + 5
        while live_in_group(proc.pid) and time.monotonic() < deadline:  # orphaned workers leave by themselves
            time.sleep(0.2)
        leftover = live_in_group(proc.pid)
        if leftover:
            os.killpg(proc.pid, signal.SIGKILL)
        assert not leftover, f"{context}: worker processes outlived the scanner"

    db = open_library(db_path)  # the next scan resumes and completes
    summary = quick_scan(db, [lib])
    present = sorted(p.name for p in lib.rglob("*.safetensors"))
    rows = db.execute("SELECT file_name, stable_id, scan_state FROM loras WHERE missing = 0").fetchall()
    assert sorted(r[0] for r in rows) == present, f"seed {seed}"
    assert {r[2] for r in rows} == {"ready"} and summary.pending == 0
    all_ids = [r[0] for r in db.execute("SELECT stable_id FROM loras")]
    assert len(all_ids) == len(set(all_ids)) and None not in all_ids
    assert [r.line() for r in run_checks(db) if not r.ok] == []


def test_concurrent_scanners_share_one_database(tmp_path):
    lib = tmp_path / "lib"
    files = tiny_library(lib, per_folder=6)
    db_path = tmp_path / "library.sqlite3"  # does not exist yet: creation and migration race too
    for wave in range(2):
        if wave == 1:
            for k in range(8):
                tiny(lib / "styles" / f"late_{k}.safetensors", "flux", 200 + k)
            files[3].unlink()
        extra = ("--structure-only",) if wave == 1 else ()  # the ID race is in phase (a); keep the test short
        procs = [subprocess.Popen(index_cmd(lib, db_path, "--workers", "0", *extra), cwd=ROOT, env=env(tmp_path),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
        outputs = [p.communicate(timeout=120) for p in procs]
        for p, (_out, err) in zip(procs, outputs, strict=True):
            assert p.returncode == 0, err
            assert "locked" not in err and "Traceback" not in err, err
    db = open_library(db_path)
    present = sorted(p.name for p in lib.rglob("*.safetensors"))
    rows = db.execute("SELECT file_name, stable_id, scan_state FROM loras WHERE missing = 0").fetchall()
    assert sorted(r[0] for r in rows) == present  # one row per file
    ids = [r[0] for r in db.execute("SELECT stable_id FROM loras")]
    assert len(ids) == len(set(ids)) == len(present) + 1  # no duplicate IDs; the deleted file keeps its own
    assert [r.line() for r in run_checks(db) if not r.ok] == []
    quick_scan(db, [lib])
    assert {r[0] for r in db.execute("SELECT scan_state FROM loras WHERE missing = 0")} == {"ready"}
