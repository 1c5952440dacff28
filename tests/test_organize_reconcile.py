"""Reconcile catches each kind of drift between index.json, the folders and the library (CLI exit 1), --fix repairs
what is safe; --clean sets broken library LoRAs aside; the CLI's dry run and JSON."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from library_helpers import quick_scan, tiny
from organize_helpers import make_drop, run

from lorawb_core.cli import main
from lorawb_core.library.db import open_library


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAWB_CONFIG", str(tmp_path / "no-config.json"))


def _cli(db_path, *args, capsys):
    rc = main(["organize", "--db", str(db_path), *map(str, args)])
    return rc, capsys.readouterr().out


def test_reconcile_catches_each_drift_and_fix_repairs_what_is_safe(tmp_path, capsys):
    drop, root, db_path = tmp_path / "drop", tmp_path / "root", tmp_path / "lib.sqlite3"
    root.mkdir()
    make_drop(drop, 6)
    run(db_path, drop, root)
    rc, out = _cli(db_path, "--reconcile", "--root", root, capsys=capsys)
    assert rc == 0 and "6 organized folders" in out and out.strip().endswith("ok")
    shutil.rmtree(root / "lora_0_ünï")  # missing_folder (and the library row's file is gone)
    (root / "lora_1_ünï" / "config.yaml").unlink()  # missing_config
    (root / "lora_2_ünï" / "lora 2 ünï.safetensors").unlink()  # missing_file + row_file_gone
    index = json.loads((root / "index.json").read_text(encoding="utf-8"))
    index["loras"]["lora_3_ünï"]["stable_id"] = "SD1-XXX-999"  # id_mismatch
    (root / "index.json").write_text(json.dumps(index), encoding="utf-8")
    stray = root / "by_hand"  # unindexed_folder
    tiny(stray / "by hand.safetensors", "sdxl", seed=77)
    (stray / "config.yaml").write_text("name: by hand\nfilename: by hand.safetensors\n", encoding="utf-8")
    moved = root / "lora_4_ünï" / "lora 4 ünï.safetensors"  # not_in_library: moved in by hand within the folder
    moved.rename(moved.with_name("renamed.safetensors"))
    index["loras"]["lora_4_ünï"]["filename"] = "renamed.safetensors"
    (root / "index.json").write_text(json.dumps(index), encoding="utf-8")
    rc, out = _cli(db_path, "--reconcile", "--root", root, "--json", capsys=capsys)
    report = json.loads(out)
    assert rc == 1 and not report["ok"]
    kinds = {f["kind"] for f in report["errors"]} | {f["kind"] for f in report["warnings"]}
    assert kinds == {"missing_folder", "missing_config", "missing_file", "row_file_gone", "id_mismatch",
                     "unindexed_folder", "not_in_library"}
    rc, out = _cli(db_path, "--reconcile", "--fix", "--root", root, capsys=capsys)
    assert rc == 1  # a missing LoRA file cannot be fixed: it stays an error
    config = yaml.safe_load((root / "lora_1_ünï" / "config.yaml").read_text(encoding="utf-8"))
    assert config["filename"] == "lora 1 ünï.safetensors" and config["stable_id"]
    index = json.loads((root / "index.json").read_text(encoding="utf-8"))
    assert "lora_0_ünï" not in index["loras"] and index["loras"]["by_hand"]["filename"] == "by hand.safetensors"
    with open_library(db_path) as db:
        real = db.execute("SELECT stable_id FROM loras WHERE path = ?",
                          [str(root / "lora_3_ünï" / "lora 3 ünï.safetensors")]).fetchone()[0]
    assert index["loras"]["lora_3_ünï"]["stable_id"] == real
    rc, out = _cli(db_path, "--reconcile", "--root", root, "--json", capsys=capsys)
    left = {f["kind"] for f in json.loads(out)["errors"]}
    assert left == {"missing_file", "row_file_gone", "not_in_library"}  # what needs a person or `lorawb index`


def test_clean_sets_broken_library_loras_aside(tmp_path, capsys):
    root, db_path = tmp_path / "root", tmp_path / "lib.sqlite3"
    good = tiny(root / "chars" / "good.safetensors", "sd15", seed=1)
    bad = root / "chars" / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"x\": \"broken\"}")
    (root / "chars" / "bad.civitai.info").write_text("{}")
    with open_library(db_path) as db:
        quick_scan(db, [root], structure_only=True)
    rc, out = _cli(db_path, "--clean", "--root", root, "--no-preview", capsys=capsys)
    assert rc == 0 and "incompatible" in out
    assert good.exists() and not bad.exists()
    assert (root / "_incompatible" / "bad.safetensors").exists()
    assert (root / "_incompatible" / "bad.civitai.info").exists()
    assert (root / "_incompatible" / "bad.reason.txt").exists()
    rc, out = _cli(db_path, "--undo", capsys=capsys)
    assert rc == 0 and bad.exists() and not (root / "_incompatible" / "bad.safetensors").exists()


def test_cli_dry_run_json_and_previews_line(tmp_path, capsys):
    drop, root, db_path = tmp_path / "drop", tmp_path / "root", tmp_path / "lib.sqlite3"
    root.mkdir()
    make_drop(drop, 2)
    rc, out = _cli(db_path, "--drop", drop, "--root", root, "--dry-run", "--json", capsys=capsys)
    plan = json.loads(out)["plan"]
    assert rc == 0 and [i["verdict"]["verdict"] for i in plan["items"]] == ["compatible", "compatible"]
    assert not list(root.iterdir())
    rc, out = _cli(db_path, "--drop", drop, "--root", root, "--dry-run", capsys=capsys)
    assert "gets a preview job in the batch queue" in out and "dry run: nothing was changed" in out
    rc, out = _cli(db_path, "--drop", drop, "--root", root, "--no-preview", "--into", "{family}/{slug}/",
                   capsys=capsys)
    assert rc == 0 and (root / "sd15" / "lora_0_ünï" / "config.yaml").exists()
    assert (root / "sdxl" / "lora_1_ünï" / "lora 1 ünï.safetensors").exists()
    rc, out = _cli(db_path, "--runs", capsys=capsys)
    assert "organize" in out and "done" in out
