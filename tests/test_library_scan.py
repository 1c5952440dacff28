"""Scanning: two phases, identity across renames/moves/deletes/restores, bad files, roots, search, check, CLI."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest
from library_helpers import db_at, ids_by_name, quick_scan, tiny, tiny_library

from lorawb_core.cli import main
from lorawb_core.errors import NotInLibrary
from lorawb_core.layouts import get_layout
from lorawb_core.library import duplicates, get_lora, measure_pending, reindex, run_checks, search
from lorawb_core.library.scan import ScanProgress
from lorawb_core.samples import build_sample_library


def assert_healthy(db):
    bad = [r.line() for r in run_checks(db) if not r.ok]
    assert not bad, bad


def block_ids(db, stable_id):
    return [b.block_id for b in get_lora(db, stable_id).blocks]


def test_two_phases_on_the_sample_library(tmp_path):
    specs = build_sample_library(tmp_path / "lib")
    db = db_at(tmp_path / "db.sqlite3")
    events: list[ScanProgress] = []
    summary = quick_scan(db, [tmp_path / "lib"], structure_only=True, progress=events.append)
    assert summary.new == len(specs) == summary.pending and not summary.errors
    assert {e.phase for e in events} == {"walk", "structure"} and events[-1].done == events[-1].total
    pony = search(db, text="ponychar").items[0]
    assert (pony.family, pony.variant, pony.layout_id, pony.stable_id) == ("sdxl", "pony", "sdxl_unet_12",
                                                                          "SDX-CHR-002")
    entry = get_lora(db, pony.stable_id)
    assert entry.blocks is None and entry.blocks_state == "pending"  # never shown as if its blocks were known
    assert entry.metadata["training"]["steps"] == 3200 and entry.family_evidence["evidence"]
    assert db.execute("SELECT count(*) FROM blocks").fetchone()[0] == 0
    assert_healthy(db)

    done = measure_pending(db, limit=3, workers=0)  # phase (b) is resumable: a few now …
    assert done.measured == 3 and done.pending == len(specs) - 3
    assert_healthy(db)
    ready = search(db, state="ready").items
    assert len(ready) == 3
    for e in ready:
        assert block_ids(db, e.stable_id) == get_layout(e.layout_id).block_ids
        assert e.autov3 and len(e.addnet) == 64


def test_unchanged_rescan_is_one_stat_per_file(tmp_path):
    lib = tmp_path / "lib"
    files = tiny_library(lib)
    db = db_at(tmp_path / "db.sqlite3")
    quick_scan(db, [lib])
    changes = db.conn.total_changes
    summary = quick_scan(db, [lib])
    assert summary.unchanged == len(files) and summary.new == summary.changed == summary.measured == 0
    assert db.conn.total_changes == changes  # nothing written


def test_renames_moves_deletes_restores_keep_ids(tmp_path):
    lib = tmp_path / "lib"
    files = tiny_library(lib, per_folder=2)
    db = db_at(tmp_path / "db.sqlite3")
    quick_scan(db, [lib])
    ids = ids_by_name(db)
    rows = len(ids)

    a, b, c, d = files[0], files[2], files[4], files[6]
    a.rename(a.with_name("renamed.safetensors"))  # rename: same inode
    (lib / "poses").mkdir()
    b.rename(lib / "poses" / b.name)  # move into another category: the ID does not change
    s = quick_scan(db, [lib])
    assert (s.moved, s.new, s.vanished) == (2, 0, 0)
    now = ids_by_name(db)
    assert now["renamed.safetensors"] == ids[a.name] and now[b.name] == ids[b.name]
    assert get_lora(db, ids[b.name]).category == "POS"

    other = tmp_path / "other-disk" / c.name  # a move across filesystems = copy + delete: new inode
    other.parent.mkdir()
    shutil.copy2(c, lib / "styles" / "moved_by_copy.safetensors")
    c.unlink()
    s = quick_scan(db, [lib])
    assert (s.new, s.vanished, s.merged) == (1, 1, 1)  # matched by addnet hash in phase (b)
    assert ids_by_name(db)["moved_by_copy.safetensors"] == ids[c.name]
    assert db.execute("SELECT count(*) FROM loras").fetchone()[0] == rows

    backup = d.read_bytes()
    d.unlink()
    s = quick_scan(db, [lib])
    assert s.vanished == 1
    gone = get_lora(db, ids[d.name])
    assert gone.missing and gone.blocks is not None  # kept, with its ID and blocks
    assert search(db, text=d.stem).total == 0 and search(db, text=d.stem, missing=True).total == 1
    d.write_bytes(backup)  # restored from a backup at the same place (new inode and mtime)
    s = quick_scan(db, [lib])
    assert s.changed == 1 and ids_by_name(db)[d.name] == ids[d.name]
    assert not get_lora(db, ids[d.name]).missing
    assert db.execute("SELECT count(*) FROM loras").fetchone()[0] == rows
    assert_healthy(db)


def test_metadata_edit_keeps_identity(tmp_path):
    lib = tmp_path / "lib"
    p = tiny(lib / "styles" / "ink.safetensors", "sdxl", 7)
    db = db_at(tmp_path / "db.sqlite3")
    quick_scan(db, [lib])
    before = get_lora(db, "SDX-STY-001")
    p.unlink()  # edited metadata and moved elsewhere: the tensor data (addnet hash) is the same
    tiny(lib / "concepts" / "ink-v2.safetensors", "sdxl", 7, metadata={"modelspec.title": "Ink v2"})
    s = quick_scan(db, [lib])
    assert s.merged == 1
    after = get_lora(db, "SDX-STY-001")
    assert after.name == "Ink v2" and after.addnet == before.addnet and after.sha256 != before.sha256
    assert after.first_seen == before.first_seen and not after.missing


def test_content_duplicates_are_listed_not_merged(tmp_path):
    lib = tmp_path / "lib"
    p = tiny(lib / "styles" / "a.safetensors", "flux", 3)
    shutil.copy2(p, lib / "styles" / "a (copy).safetensors")
    db = db_at(tmp_path / "db.sqlite3")
    s = quick_scan(db, [lib])
    assert s.duplicates == 1 and s.merged == 0
    groups = duplicates(db)
    assert len(groups) == 1 and sorted(e.stable_id for e in groups[0].entries) == ["FLX-STY-001", "FLX-STY-002"]
    assert search(db, duplicates=True).total == 2
    assert get_lora(db, "FLX-STY-001").duplicates == [str(lib / "styles" / "a.safetensors")]


def test_bad_files_are_recorded_with_a_reason_and_retried_on_change(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "empty.safetensors").write_bytes(b"")
    (lib / "page.safetensors").write_text("<!doctype html><html>login</html>")
    (lib / "truncated.safetensors").write_bytes(tiny(tmp_path / "t.safetensors").read_bytes()[:100])
    save_file({"foo.bar": np.zeros((2, 2), np.float16)}, str(lib / "not_a_lora.safetensors"))
    db = db_at(tmp_path / "db.sqlite3")
    s = quick_scan(db, [lib])
    reasons = {os.path.basename(e.item): e.reason for e in s.errors}
    assert "empty (0 bytes)" in reasons["empty.safetensors"]
    assert "HTML" in reasons["page.safetensors"]
    assert "truncated" in reasons["truncated.safetensors"]
    assert reasons["not_a_lora.safetensors"].startswith("cannot be applied: no LoRA modules found")
    rows = {r["file_name"]: r for r in db.query("SELECT * FROM loras")}
    assert rows["empty.safetensors"]["scan_state"] == "error" and rows["empty.safetensors"]["stable_id"] is None
    assert rows["not_a_lora.safetensors"]["stable_id"] == "UNK-GEN-001"  # readable, but no layout
    assert_healthy(db)

    s = quick_scan(db, [lib])
    assert s.errors == [] and s.unchanged == 4  # not re-read until they change
    (lib / "empty.safetensors").unlink()
    tiny(lib / "empty.safetensors", "sd15", 5)  # the download was fetched again
    s = quick_scan(db, [lib])
    assert s.changed == 1 and s.errors == []
    fixed = search(db, text="empty").items[0]
    assert fixed.scan_state == "ready" and fixed.stable_id == "SD1-GEN-001"


def test_missing_root_marks_missing_and_comes_back(tmp_path):
    lib, usb = tmp_path / "lib", tmp_path / "usb"
    tiny(lib / "a.safetensors", "sd15", 1)
    tiny(usb / "styles" / "b.safetensors", "flux", 2)
    tiny(usb / "styles" / "c.safetensors", "flux", 3)
    db = db_at(tmp_path / "db.sqlite3")
    quick_scan(db, [lib, usb])
    ids = ids_by_name(db)
    usb.rename(tmp_path / "unplugged")
    s = quick_scan(db, [lib, usb])
    assert s.unavailable_roots == [str(usb)] and s.vanished == 2
    assert search(db, missing=True).total == 2 and db.execute("SELECT count(*) FROM loras").fetchone()[0] == 3
    assert_healthy(db)
    (tmp_path / "unplugged").rename(usb)
    s = quick_scan(db, [lib, usb])
    assert s.restored == 2 and ids_by_name(db) == ids and search(db, missing=True).total == 0


def test_symlink_loops_do_not_hang(tmp_path):
    lib = tmp_path / "lib"
    tiny(lib / "styles" / "a.safetensors", "sd15", 1)
    os.symlink(lib, lib / "styles" / "loop")
    os.symlink(lib / "styles", lib / "styles" / "self")
    db = db_at(tmp_path / "db.sqlite3")
    s = quick_scan(db, [lib], structure_only=True)
    assert s.files == 1 and s.new == 1


def test_files_still_being_written_are_skipped_until_stable(tmp_path):
    lib = tmp_path / "lib"
    tiny(lib / "done.safetensors", "sd15", 1)
    (lib / "big.safetensors.part").write_bytes(b"\0" * 100)
    (lib / "x.safetensors.crdownload").write_bytes(b"\0" * 100)
    growing = lib / "growing.safetensors"
    data = tiny(tmp_path / "src.safetensors", "sdxl", 2).read_bytes()
    stop = threading.Event()

    def writer():
        with open(growing, "wb") as fh:
            for i in range(0, len(data), 512):
                fh.write(data[i:i + 512])
                fh.flush()
                if stop.wait(0.02):
                    break

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.1)
    db = db_at(tmp_path / "db.sqlite3")
    try:
        s = quick_scan(db, [lib], settle_window=5.0, settle_wait=0.2)
    finally:
        stop.set()
        t.join()
    assert s.unstable == [str(growing)] and len(s.partial) == 2
    assert [r["file_name"] for r in db.query("SELECT file_name FROM loras")] == ["done.safetensors"]
    growing.write_bytes(data)
    os.utime(growing, ns=(time.time_ns() - 10**10,) * 2)
    s = quick_scan(db, [lib])
    assert s.new == 1 and not s.unstable


def test_search_filters_sorts_and_pages(tmp_path):
    build_sample_library(tmp_path / "lib")
    db = db_at(tmp_path / "db.sqlite3")
    quick_scan(db, [tmp_path / "lib"], structure_only=True)
    total = search(db).total
    assert total == 25
    assert {e.family for e in search(db, family="flux").items} == {"flux"}
    everything = search(db, limit=100).items
    for layout in {e.layout_id for e in everything}:
        assert search(db, layout=layout).total == sum(e.layout_id == layout for e in everything)
    assert {e.format for e in search(db, format="xlabs").items} == {"xlabs"}
    assert {e.algorithm for e in search(db, algorithm="lokr").items} == {"lokr"}
    assert search(db, variant="pony").items[0].name == "ponychar_xl"
    assert search(db, text="prtrt").items[0].title == "Portrait Flux"  # trigger words are searched
    assert search(db, text="PORTRAIT flux").items[0].title == "Portrait Flux"  # all words, any case, prefixes
    assert search(db, text='"; DROP TABLE loras; --').total == 0  # text is never SQL or FTS syntax
    seen = []
    for page in range(4):
        got = search(db, sort="size", descending=True, limit=7, offset=page * 7)
        assert got.total == 25
        seen += got.items
    assert len({e.stable_id for e in seen}) == 25
    assert [e.size for e in seen] == sorted((e.size for e in seen), reverse=True)
    names = [e.name for e in search(db, limit=100).items]
    assert names == sorted(names, key=str.casefold)
    all_flux = search(db, text="flux", sort="name", limit=100)
    page = search(db, text="flux", sort="name", limit=2, offset=2)
    assert page.total == all_flux.total >= 4 and page.items == all_flux.items[2:4]
    measure_pending(db, limit=2, workers=0)
    strongest = search(db, sort="strength", descending=True, limit=25).items
    assert [e.scan_state for e in strongest[:2]] == ["ready", "ready"]  # pending ones (no strength) come last
    assert search(db, state="pending").total == 23


def test_reindex_and_not_found(tmp_path):
    lib = tmp_path / "lib"
    tiny(lib / "a.safetensors", "flux", 1)
    db = db_at(tmp_path / "db.sqlite3")
    quick_scan(db, [lib], structure_only=True)
    s = reindex(db, "flx-gen-001")
    assert s.measured == 1 and get_lora(db, "FLX-GEN-001").blocks_state == "ready"
    with pytest.raises(NotInLibrary, match="No LoRA with stable ID 'SDX-CHR-999'"):
        get_lora(db, "SDX-CHR-999")


def test_cli_index_search_show_check_ids(tmp_path, capsys, monkeypatch):
    lib = tmp_path / "lib"
    tiny_library(lib, per_folder=1)
    dbp = str(tmp_path / "cli.sqlite3")
    monkeypatch.setenv("LORAWB_CONFIG", str(tmp_path / "none.json"))
    assert main(["index", str(lib), "--db", dbp, "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "7 files: 7 new" in out and "7 measured, 0 pending" in out
    assert main(["search", "--db", dbp, "--family", "sdxl", "--json"]) == 0
    import json

    found = json.loads(capsys.readouterr().out)
    assert found["total"] == 2 and {i["stable_id"] for i in found["items"]} == {"SDX-CHR-001", "SDX-CLT-001"}
    assert main(["show", "SDX-CLT-001", "--db", dbp]) == 0
    shown = capsys.readouterr().out
    assert "sdxl_unet_12" in shown and "IN04" in shown
    assert main(["check", "--db", dbp]) == 0
    assert "13 passed, 0 failed" in capsys.readouterr().out
    export = tmp_path / "ids.json"
    assert main(["ids", "export", str(export), "--db", dbp]) == 0
    assert main(["ids", "import", str(export), "--db", dbp]) == 0
    assert "7 already in place" in capsys.readouterr().out
    next(lib.rglob("*.safetensors")).unlink()  # deleted behind the library's back
    assert main(["check", "--db", dbp]) == 1
    assert "FAIL  paths_exist" in capsys.readouterr().out
    assert main(["show", "NOP-NOP-001", "--db", dbp]) == 1
    assert "No LoRA with stable ID" in capsys.readouterr().err
