"""Organize on real-format files: folders, config.yaml, index.json, reasons, the library following every move,
dry runs, undo to the exact tree, the lock, a cross-filesystem move and a full disk mid-copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from library_helpers import HOUR_AGO_NS, ids_by_name, quick_scan, tiny
from organize_helpers import copies, make_drop, run, sha, tree

from lorawb_core.errors import OrganizeBusy, OrganizeError
from lorawb_core.library.db import open_library
from lorawb_core.organize.lock import organize_lock
from lorawb_core.organize.slugs import slugify
from lorawb_core.samples import write_lora

ROOT_DIR = Path(__file__).resolve().parents[1]
LEDGER = ".lorawb-ids.json"  # the library's ID ledger (written by its scan), not an organize file


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAWB_CONFIG", str(tmp_path / "no-config.json"))


def test_slugs_are_safe_on_windows_and_linux():
    assert slugify('a<b>c:"d/e\\f|g?h*i') == "a_b_c_d_e_f_g_h_i"
    assert slugify("CON") == "CON_" and slugify("lpt1.txt") == "lpt1.txt_"
    assert slugify(" .hidden. ") == "hidden" and slugify("...") == "lora"
    assert slugify("Ärger mit Ünï") == "Ärger_mit_Ünï"  # unicode kept (NFC)
    assert len(slugify("x" * 300)) == 80


def test_organize_files_each_lora_with_config_index_and_reasons(tmp_path):
    drop, root, db_path = tmp_path / "drop", tmp_path / "root", tmp_path / "lib.sqlite3"
    root.mkdir()
    make_drop(drop, 4)
    tiny(drop / "same:slug.safetensors", "sd15", seed=7)
    tiny(drop / "same?slug.safetensors", "sdxl", seed=8)  # both slug to same_slug: the second gets -2
    (drop / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}")
    library_twin = tiny(root / "kept" / "twin.safetensors", "flux", seed=102)  # = drop's "lora 2"
    (drop / "lonely.preview.png").write_bytes(b"no lora of this name")
    mtimes = {p.name: p.stat().st_mtime_ns for p in drop.iterdir()}
    with open_library(db_path) as db:
        quick_scan(db, [root])
    result = run(db_path, drop, root)
    assert result.error is None and result.organized == 5 and result.rejected == 2
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert folders == ["_duplicates", "_incompatible", "kept", "lora_0_ünï", "lora_1_ünï", "lora_3_ünï", "same_slug",
                       "same_slug-2"]
    config = yaml.safe_load((root / "lora_0_ünï" / "config.yaml").read_text(encoding="utf-8"))
    assert config["filename"] == "lora 0 ünï.safetensors" and config["default_weight"] == 1.0
    assert config["preview_image"] == "lora 0 ünï.preview.png" and config["compatible"] is True
    assert config["family"] == "sd15" and config["sha256"] == sha(root / "lora_0_ünï" / "lora 0 ünï.safetensors")
    assert (root / "lora_0_ünï" / "lora 0 ünï.civitai.info").exists()
    for name in ("lora 0 ünï.safetensors", "lora 0 ünï.preview.png"):  # modification times kept
        assert (root / "lora_0_ünï" / name).stat().st_mtime_ns == mtimes[name]
    assert (root / "_duplicates" / "lora 2 ünï.safetensors").exists()
    assert "duplicate" in (root / "_duplicates" / "lora 2 ünï.reason.txt").read_text(encoding="utf-8")
    assert "broken.safetensors" in (root / "_incompatible" / "broken.reason.txt").read_text(encoding="utf-8")
    index = json.loads((root / "index.json").read_text(encoding="utf-8"))
    assert set(index["loras"]) == {"lora_0_ünï", "lora_1_ünï", "lora_3_ünï", "same_slug", "same_slug-2"}
    assert index["rejected"]["_duplicates/lora 2 ünï.safetensors"]["duplicate_of"] == ids_by_name(
        open_library(db_path))[library_twin.name]
    assert json.loads((root / "preview_config.json").read_text()) == {"version": 1}
    assert (drop / "lonely.preview.png").exists()
    assert any("sidecar without its LoRA" in left["reason"] for left in result.plan.left)
    with open_library(db_path) as db:  # every organized LoRA is in the library at its new path, with its ID
        for rel, entry in index["loras"].items():
            row = db.execute("SELECT stable_id FROM loras WHERE path = ?",
                             [str(root / rel / entry["filename"])]).fetchone()
            assert row is not None and row[0] == entry["stable_id"]


def test_drop_at_the_top_of_the_root_keeps_stable_ids(tmp_path):
    root, db_path = tmp_path / "root", tmp_path / "lib.sqlite3"
    make_drop(root, 3)
    with open_library(db_path) as db:
        quick_scan(db, [root])
        before = ids_by_name(db)
    result = run(db_path, root, root)
    assert result.organized == 3
    with open_library(db_path) as db:
        after = {r[0]: r[1] for r in db.execute("SELECT file_name, stable_id FROM loras WHERE missing = 0")}
        assert db.execute("SELECT count(*) FROM loras").fetchone()[0] == 3  # moved rows, no new ones
    assert after == before
    assert all((root / f"lora_{i}_ünï" / f"lora {i} ünï.safetensors").exists() for i in range(3))


def test_dry_run_changes_nothing_and_lists_every_move(tmp_path):
    drop, root, db_path = tmp_path / "drop", tmp_path / "root", tmp_path / "lib.sqlite3"
    root.mkdir()
    make_drop(drop, 3)
    before = tree(drop, root)
    result = run(db_path, drop, root, dry_run=True)
    assert tree(drop, root) == before
    text = "\n".join(result.plan.lines())
    assert text.count("  move  ") == 3 + 2 * 2 and text.count("config.yaml") == 3 and "index.json" in text


def test_undo_restores_the_exact_tree_and_keeps_edited_files(tmp_path):
    drop, root, db_path = tmp_path / "drop", tmp_path / "root", tmp_path / "lib.sqlite3"
    root.mkdir()
    (root / "index.json").write_text('{"version": 1, "loras": {}, "rejected": {}, "mine": true}')
    make_drop(drop, 4)
    (drop / "junk.safetensors").write_bytes(b"not a lora at all")
    before = tree(drop, root)
    first = run(db_path, drop, root)
    with open_library(db_path) as db:
        ids = ids_by_name(db)
    from lorawb_core.organize import undo

    with open_library(db_path) as db:
        result = undo(db, str(db_path))
    assert result.undone_run == first.run_id and result.restored == 4 + 2 * 2 + 1 and not result.kept
    after = tree(drop, root, skip=(LEDGER,))
    index_after = json.loads((root / "index.json").read_text())
    assert index_after["loras"] == {} and index_after["mine"] is True
    assert {k: v for k, v in after.items() if not k.endswith("index.json")} == {
        k: v for k, v in before.items() if not k.endswith("index.json")}
    with open_library(db_path) as db:
        assert ids_by_name(db) == ids  # undo moves rows back too: same IDs
    # organize again, edit one config by hand: undo keeps it (and its folder)
    run(db_path, drop, root)
    cfg = root / "lora_1_ünï" / "config.yaml"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("notes: ''", "notes: mine"), encoding="utf-8")
    with open_library(db_path) as db:
        result = undo(db, str(db_path))
    assert any("edited since the run" in k for k in result.kept) and cfg.exists()
    assert (drop / "lora 1 ünï.safetensors").exists()


def test_a_second_organize_is_refused_with_the_reason(tmp_path):
    drop, root, db_path = tmp_path / "drop", tmp_path / "root", tmp_path / "lib.sqlite3"
    root.mkdir()
    make_drop(drop, 1)
    before = tree(drop, root)
    with organize_lock(str(db_path), "organize elsewhere"):
        with pytest.raises(OrganizeBusy, match=r"another organize is running \(process \d+, organize elsewhere"):
            run(db_path, drop, root)
    assert tree(drop, root) == before


def test_bad_folders_are_refused_before_anything_moves(tmp_path):
    root, db_path = tmp_path / "root", tmp_path / "lib.sqlite3"
    make_drop(root / "sub", 1)
    with pytest.raises(OrganizeError, match="inside the library root"):
        run(db_path, root / "sub", root)
    with pytest.raises(OrganizeError, match="does not exist"):
        run(db_path, tmp_path / "nowhere", root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(OrganizeError, match="symbolic link"):
        run(db_path, _drop_with_one(tmp_path / "d2"), root, rule="link/{slug}/")
    assert not any(outside.iterdir())
    with pytest.raises(Exception, match="the last folder must hold"):
        run(db_path, tmp_path / "d2", root, rule="{family}/")


def _drop_with_one(drop: Path) -> Path:
    make_drop(drop, 1)
    return drop


def test_symlinks_in_the_drop_are_never_followed(tmp_path):
    drop, root, db_path = tmp_path / "drop", tmp_path / "root", tmp_path / "lib.sqlite3"
    root.mkdir()
    make_drop(drop, 1)
    target = tiny(tmp_path / "elsewhere.safetensors", "sdxl", seed=9)
    (drop / "link.safetensors").symlink_to(target)
    result = run(db_path, drop, root)
    assert result.organized == 1 and (drop / "link.safetensors").is_symlink() and target.exists()
    assert any("symbolic link" in left["reason"] for left in result.plan.left)


def test_a_file_still_being_written_is_left_for_the_next_run(tmp_path):
    drop, root, db_path = tmp_path / "drop", tmp_path / "root", tmp_path / "lib.sqlite3"
    root.mkdir()
    make_drop(drop, 1)
    growing = drop / "growing.safetensors"
    growing.write_bytes(b"\0" * 64)
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            with open(growing, "ab") as fh:
                fh.write(b"\0" * 64)
            time.sleep(0.02)

    t = threading.Thread(target=writer)
    t.start()
    try:
        result = run(db_path, drop, root, settle_window=30.0, settle_wait=0.3)
    finally:
        stop.set()
        t.join()
    assert growing.exists() and result.organized == 1
    assert any(left["path"] == str(growing) and "still being written" in left["reason"] for left in result.plan.left)


def _other_fs_dir(tmp_path: Path) -> Path:
    shm = Path("/dev/shm")
    assert shm.is_dir() and shm.stat().st_dev != tmp_path.stat().st_dev, "the test needs tmpfs at /dev/shm"
    d = shm / f"lorawb-organize-{os.getpid()}-{tmp_path.name}"
    d.mkdir()
    return d


def test_cross_filesystem_move_copies_verifies_and_keeps_mtimes(tmp_path):
    import shutil

    other = _other_fs_dir(tmp_path)
    try:
        drop, root, db_path = other / "drop", tmp_path / "root", tmp_path / "lib.sqlite3"
        root.mkdir()
        originals = make_drop(drop, 3)
        mtimes = {Path(p).name: Path(p).stat().st_mtime_ns for p in originals}
        result = run(db_path, drop, root)
        assert result.error is None and result.organized == 3
        assert not any(drop.glob("*.safetensors"))
        counts = copies(drop, root)
        assert all(counts[h] == 1 for h in originals.values())
        for p in root.rglob("*.safetensors"):
            assert p.stat().st_mtime_ns == mtimes[p.name]
        assert not list(root.rglob("*.lorawb-part"))
    finally:
        shutil.rmtree(other)


def test_disk_full_mid_copy_keeps_the_source_and_says_so(tmp_path):
    """A real write limit (RLIMIT_FSIZE, as a full disk: the copy's write fails) in a subprocess."""
    import shutil

    other = _other_fs_dir(tmp_path)
    try:
        drop, root, db_path = other / "drop", tmp_path / "root", tmp_path / "lib.sqlite3"
        root.mkdir()
        drop.mkdir()
        big = write_lora(drop / "big.safetensors", "sd15", rank=32)  # 38 MB; the limit lets 16 MB through
        os.utime(big, ns=(HOUR_AGO_NS, HOUR_AGO_NS))
        before = sha(big)
        with open_library(db_path):
            pass
        code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                f"resource.setrlimit(resource.RLIMIT_FSIZE, ({16 << 20}, resource.RLIM_INFINITY)); "
                "from lorawb_core.cli import main; sys.exit(main(sys.argv[1:]))")
        proc = subprocess.run([sys.executable, "-c", code, "organize", "--drop", str(drop), "--root", str(root),
                               "--db", str(db_path), "--no-preview"], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT_DIR)}, cwd=tmp_path)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "cannot move" in proc.stdout and "The file stays at" in proc.stdout
        assert sha(big) == before and not list(root.rglob("*.lorawb-part"))
        assert not list(root.rglob("*.safetensors"))
    finally:
        shutil.rmtree(other)


def test_files_appearing_while_organizing_wait_for_the_next_run(tmp_path):
    drop, root, db_path = tmp_path / "drop", tmp_path / "root", tmp_path / "lib.sqlite3"
    root.mkdir()
    make_drop(drop, 2)
    late = drop / "late.safetensors"
    from lorawb_core.organize import OrganizeOptions, organize

    def progress(done, total, path):
        if not late.exists():
            tiny(late, "sdxl", seed=55)

    with open_library(db_path) as db:
        result = organize(db, str(db_path), OrganizeOptions(drop=str(drop), root=str(root), preview=False,
                                                            settle_window=0.0), progress)
    assert result.organized == 2 and late.exists()  # not in this run's plan: untouched
    result = run(db_path, drop, root)
    assert result.organized == 1 and not late.exists() and (root / "late" / "late.safetensors").exists()


def test_lycoris_and_peft_sdxl_files_are_compatible(tmp_path):
    """What the original system called incompatible (LyCORIS, SDXL): files written by the real libraries."""
    pytest.importorskip("lycoris")
    import real_writers as rw

    writers = dict(rw.ALL_WRITERS)
    drop, root, db_path = tmp_path / "drop", tmp_path / "root", tmp_path / "lib.sqlite3"
    drop.mkdir()
    root.mkdir()
    families = {}
    for name in ("lycoris_loha", "lycoris_lokr", "peft_sdxl"):
        written = writers[name](tmp_path / "written" / name)
        target = drop / f"{name}.safetensors"
        written.path.rename(target)
        os.utime(target, ns=(HOUR_AGO_NS, HOUR_AGO_NS))
        families[name] = "sd15" if written.family == "sd1" else written.family
    result = run(db_path, drop, root)
    assert result.error is None and result.organized == 3, [i.verdict.reason for i in result.plan.items]
    for name, family in families.items():
        config = yaml.safe_load((root / name / "config.yaml").read_text(encoding="utf-8"))
        assert config["family"] == family and config["compatible"] is True


def test_organizing_queues_a_preview_job_for_each_lora_without_one(tmp_path, monkeypatch):
    """Without --no-preview, the LoRAs a run organized that have no preview become one batch of preview jobs in the
    batch queue (lora 0 and 2 came with a sidecar, lora 1 (SDXL) and 3 (SD 1.5) did not)."""
    from lorawb_core.batch.queue import BatchQueue

    config = tmp_path / "preview_config.json"
    config.write_text(json.dumps({"defaults": {"checkpoint": "tiny_sd15.safetensors"},
                                  "families": {"sdxl": {"checkpoint": "tiny_xl.safetensors"}}}), encoding="utf-8")
    monkeypatch.setenv("LORAWB_PREVIEW_CONFIG", str(config))
    drop, root, db_path = tmp_path / "drop", tmp_path / "loras", tmp_path / "lib.sqlite3"
    make_drop(drop, 4)
    root.mkdir()
    result = run(db_path, drop, root, preview=True)
    assert result.error is None and result.organized == 4 and result.preview_batch is not None, result.notes
    queue = BatchQueue(str(db_path))
    try:
        jobs = queue.jobs(result.preview_batch)
    finally:
        queue.close()
    names = sorted(j.params["name"] for j in jobs)
    assert names == ["lora 1 ünï", "lora 3 ünï"], names
    assert any(f"batch {result.preview_batch} queued (2 job(s))" in n for n in result.notes), result.notes
