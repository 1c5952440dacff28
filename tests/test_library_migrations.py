"""Schema migrations: upgrading the lorawb 0.1 fixture in place, once, even with several processes at it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from library_helpers import quick_scan, tiny

from lorawb_core.errors import LibraryError
from lorawb_core.library import get_lora, run_checks, search
from lorawb_core.library.db import open_library
from lorawb_core.library.migrations import MIGRATION_NAMES, migrate

FIXTURE = Path(__file__).parent / "fixtures" / "library_v1.sqlite3"
ROOT = Path(__file__).resolve().parents[1]


def old_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "library.sqlite3"
    shutil.copy(FIXTURE, dst)
    return dst


def test_fixture_is_version_1():
    from sqlite_utils import Database

    db = Database(FIXTURE)
    assert [r["name"] for r in db["_sqlite_migrations"].rows] == ["m001_loras_and_blocks"]
    assert "strength" in db["blocks"].columns_dict and "rel_path" not in db["loras"].columns_dict
    db.close()


def test_upgrade_keeps_the_data(tmp_path):
    db = open_library(old_copy(tmp_path))
    assert [r["name"] for r in db["_sqlite_migrations"].rows] == MIGRATION_NAMES
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATION_NAMES)
    ready = get_lora(db, "SD1-CHR-001")
    assert ready.scan_state == "ready" and ready.trigger_words == ["mychar"] and ready.autov2 == "ABABABABAB"
    assert [b.block_id for b in ready.blocks][:3] == ["BASE", "IN01", "IN02"]
    assert abs(sum(b.share for b in ready.blocks) - 1.0) < 1e-9 and ready.blocks[0].norm == pytest.approx(0.1)
    assert ready.metadata == {"title": None, "tags": ["anime"]}  # moved to lora_details
    assert db.execute("SELECT count(*) FROM loras WHERE metadata IS NOT NULL").fetchone()[0] == 0
    assert get_lora(db, "SDX-STY-004").scan_state == "pending"  # v1 "new"
    broken = db.execute("SELECT scan_state, error FROM loras WHERE id = 3").fetchone()
    assert broken[0] == "error" and "reason not recorded" in broken[1]
    assert search(db, text="inkstyle").items[0].stable_id == "SDX-STY-004"  # the search index covers old rows
    assert [r.name for r in run_checks(db, paths=False) if not r.ok] == []
    assert migrate(db) == []  # an up-to-date database is left alone
    # numbering continues after the IDs the old version handed out
    lib = tmp_path / "lib"
    tiny(lib / "styles" / "new.safetensors", "sdxl", 1)
    quick_scan(db, [lib], structure_only=True)
    assert search(db, text="new").items[0].stable_id == "SDX-STY-005"


def test_old_database_opened_by_several_processes_migrates_once(tmp_path):
    path = old_copy(tmp_path)
    code = ("import sys; from lorawb_core.library.db import open_library; "
            "db = open_library(sys.argv[1]); print(db.execute('select count(*) from loras').fetchone()[0])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in results]
    assert [out.strip() for out, _ in results] == ["3"] * 4
    db = open_library(path)
    names = [r["name"] for r in db["_sqlite_migrations"].rows]
    assert names == MIGRATION_NAMES  # each applied exactly once
    assert [r.name for r in run_checks(db, paths=False) if not r.ok] == []


def test_database_from_a_newer_lorawb_is_refused(tmp_path):
    db = open_library(tmp_path / "db.sqlite3")
    db["_sqlite_migrations"].insert({"migration_set": "lorawb", "name": "m999_future", "applied_at": "x"})
    db.close()
    with pytest.raises(LibraryError, match="written by a newer lorawb"):
        open_library(tmp_path / "db.sqlite3")


def test_unopenable_path_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LibraryError, match="cannot open the library database"):
        open_library(tmp_path / "file" / "library.sqlite3")


def test_upgrade_from_the_first_search_schema(tmp_path):
    """m005 moves the wide JSON out of ``loras`` and rebuilds the search index with the filter words."""
    from sqlite_utils import Database

    from lorawb_core.library.migrations import MIGRATIONS

    path = tmp_path / "m004.sqlite3"
    old = Database(path)
    MIGRATIONS.apply(old, stop_before="m005_lean_rows_and_facets")
    old["loras"].insert({"path": "/lib/styles/ink.safetensors", "name": "ink", "sort_key": "ink", "family": "sdxl",
                         "layout_id": "sdxl_unet_12", "scan_state": "pending", "missing": 0, "stable_id": "SDX-STY-001",
                         "metadata": '{"title": "Ink"}', "family_evidence": '{"evidence": ["width 2048"]}'})
    old["id_sequences"].insert({"prefix": "SDX-STY", "last": 1})
    old.close()
    db = open_library(path)
    entry = get_lora(db, "SDX-STY-001")
    assert entry.metadata == {"title": "Ink"} and entry.family_evidence == {"evidence": ["width 2048"]}
    assert search(db, text="ink", family="sdxl").total == 1 and search(db, text="ink", family="flux").total == 0
    assert [r.name for r in run_checks(db, paths=False) if not r.ok] == []
