"""``lorawb previews|ab|xy|finish`` without a server: planning, queueing into the real job table, JSON output, exit
codes, refusals (the runs themselves are in tests/test_batch_comfyui.py, on a real ComfyUI)."""

from __future__ import annotations

import json

import pytest
from library_helpers import quick_scan, tiny
from ui_helpers import free_port

from lorawb_core.cli import main
from lorawb_core.library.db import open_library


@pytest.fixture
def lib(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAWB_CONFIG", str(tmp_path / "config.json"))
    settings = tmp_path / "preview_config.json"
    settings.write_text(json.dumps({"defaults": {"checkpoint": "tiny.safetensors"}}))
    monkeypatch.setenv("LORAWB_PREVIEW_CONFIG", str(settings))
    root = tmp_path / "loras"
    tiny(root / "a.safetensors", "sd15", 1)
    tiny(root / "w.safetensors", "wan", 2)
    db_path = tmp_path / "library.sqlite3"
    with open_library(db_path) as db:
        quick_scan(db, [root])
        ids = {r["file_name"]: r["stable_id"] for r in db.query("SELECT file_name, stable_id FROM loras")}
    return {"db": str(db_path), "root": root, "ids": ids, "closed": f"http://127.0.0.1:{free_port()}"}


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_xy_queues_the_grid_and_finish_waits_for_the_run(lib, capsys):
    a = lib["ids"]["a.safetensors"]
    code, out, err = run(capsys, "xy", a, "--x", "strength=0,1", "--y", "seed=1,2", "--db", lib["db"], "--server",
                         lib["closed"], "--json", "--steps", "4")
    assert code == 0, err
    data = json.loads(out)
    assert data["queued"] == 4 and data["skipped"] == []
    assert "the workflows were not checked" in err and lib["closed"] in err  # no server: queued, not checked
    code, out, _ = run(capsys, "jobs", "list", "--batch", str(data["batch_id"]), "--db", lib["db"], "--json")
    jobs = json.loads(out)
    assert [j["key"] for j in jobs] == ["x=0|y=1", "x=1|y=1", "x=0|y=2", "x=1|y=2"]
    assert jobs[0]["params"]["steps"] == 4 and all(j["state"] == "queued" for j in jobs)
    code, _, err = run(capsys, "finish", str(data["batch_id"]), "--db", lib["db"])
    assert code == 1 and "still has 4 job(s) to run" in err


def test_previews_report_skipped_loras_and_exit_3(lib, capsys):
    a, w = lib["ids"]["a.safetensors"], lib["ids"]["w.safetensors"]
    code, out, err = run(capsys, "previews", a, w, str(lib["root"] / "a.safetensors"), "--db", lib["db"],
                         "--no-check", "--size", "512x768")
    assert code == 3
    assert f"skipped {w}: WAN 2.x LoRAs have no built-in workflow template" in err
    assert "batch" in out and "queued (1 job(s))" in out and "lorawb finish" in out
    code, out, err = run(capsys, "previews", w, "--db", lib["db"], "--no-check", "--json")
    assert code == 3 and json.loads(out)["batch_id"] is None


@pytest.mark.parametrize("argv, message", [
    (["previews"], "say which LoRAs to preview"),
    (["xy", "A", "--ablate", "--x", "seed=1"], "--ablate makes its own axis"),
    (["xy", "A"], "give the x axis"),
    (["previews", "--missing", "--size", "big"], "give WIDTHxHEIGHT"),
    (["ab", "A", "--strengths", "1", "--profiles", "ALL"], "an A/B test varies one thing"),
])
def test_usage_errors_exit_1_and_queue_nothing(lib, capsys, argv, message):
    argv = [lib["ids"]["a.safetensors"] if v == "A" else v for v in argv]
    code, _, err = run(capsys, *argv, "--db", lib["db"], "--no-check")
    assert code == 1 and message in err
    with open_library(lib["db"]) as db:
        assert db["jobs"].count == 0
