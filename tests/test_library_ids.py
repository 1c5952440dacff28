"""Stable IDs: family codes, category rules, numbering, the ledger, export/import."""

from __future__ import annotations

import json

import pytest
from library_helpers import db_at, ids_by_name, quick_scan, tiny, tiny_library

from lorawb_core.errors import UsageError
from lorawb_core.library.check import run_checks
from lorawb_core.library.stable_ids import (
    FAMILY_CODES,
    LEDGER_NAME,
    category_for,
    category_mapping,
    export_ids,
    format_id,
    import_ids,
    parse_id,
    parse_ledger,
    read_ledger,
)


def test_family_codes_table():
    assert FAMILY_CODES == {"sd15": "SD1", "sd2": "SD2", "sdxl": "SDX", "sdxl_refiner": "SDR", "sd3": "SD3",
                            "flux": "FLX", "wan": "WAN", "hunyuan_video": "HYV", "unknown": "UNK"}


@pytest.mark.parametrize("rel, expected", [
    ("a.safetensors", "GEN"),
    ("characters/a.safetensors", "CHR"),
    ("Characters/pony/a.safetensors", "CHR"),
    ("styles/a.safetensors", "STY"),
    ("Concepts/a.safetensors", "CPT"),
    ("clothing/a.safetensors", "CLT"),
    ("Outfits/a.safetensors", "CLT"),
    ("poses/a.safetensors", "POS"),
    ("backgrounds/a.safetensors", "BKG"),
    ("flux/outfits/a.safetensors", "CLT"),  # a base-model folder is skipped
    ("SD 1.5/styles/a.safetensors", "STY"),
    ("flux/a.safetensors", "GEN"),
    ("Mecha Girls/a.safetensors", "MEC"),
    ("Ünïcode/a.safetensors", "UNI"),
    ("3d/a.safetensors", "3DX"),
    ("日本/characters/a.safetensors", "CHR"),  # nothing left after ASCII folding: next level
])
def test_category_rules(rel, expected):
    assert category_for(rel) == expected


def test_category_mapping_is_configurable():
    mapping = category_mapping({"Mecha Girls": "MCH", "characters": "", "wip": "tmp"})
    assert category_for("Mecha Girls/a.safetensors", mapping) == "MCH"
    assert category_for("characters/styles/a.safetensors", mapping) == "STY"
    assert category_for("wip/a.safetensors", mapping) == "TMP"
    with pytest.raises(UsageError, match="three letters"):
        category_mapping({"x": "TOOLONG"})


def test_format_and_parse():
    assert format_id("FLX-CLT", 57) == "FLX-CLT-057"
    assert format_id("FLX-CLT", 1234) == "FLX-CLT-1234"
    assert parse_id("flx-clt-057") == ("FLX-CLT", 57)
    assert parse_id("FLX-CLT-57") is None
    assert parse_id("nonsense") is None


def test_numbers_are_never_reused(tmp_path):
    lib = tmp_path / "lib"
    a = tiny(lib / "styles" / "a.safetensors", "flux", 1)
    db = db_at(tmp_path / "db.sqlite3")
    quick_scan(db, [lib], structure_only=True)
    a.unlink()
    quick_scan(db, [lib], structure_only=True)  # a is missing, keeps FLX-STY-001
    db.execute("DELETE FROM lora_details")
    db.execute("DELETE FROM loras")  # even if its row is gone, the sequence remembers
    tiny(lib / "styles" / "b.safetensors", "flux", 2)
    quick_scan(db, [lib], structure_only=True, ledger=False)
    assert ids_by_name(db) == {"b.safetensors": "FLX-STY-002"}


def test_deterministic_ids_into_a_fresh_database(tmp_path):
    lib = tmp_path / "lib"
    tiny_library(lib)
    first = db_at(tmp_path / "one.sqlite3")
    quick_scan(first, [lib])
    expected = ids_by_name(first)
    assert len(set(expected.values())) == len(expected) == 21
    assert expected["sd15_characters_0.safetensors"] == "SD1-CHR-001"
    assert expected["flux_flux_poses_2.safetensors"] == "FLX-POS-003"

    # the database is deleted: the ledger in the root gives every file its ID back
    ledger = read_ledger(str(lib))
    assert ledger is not None and len(ledger.entries) == 21
    again = db_at(tmp_path / "two.sqlite3")
    quick_scan(again, [lib], structure_only=True)
    assert ids_by_name(again) == expected

    # database and ledger both gone: the sorted-path rule gives the same IDs again
    (lib / LEDGER_NAME).unlink()
    fresh = db_at(tmp_path / "three.sqlite3")
    quick_scan(fresh, [lib], structure_only=True)
    assert ids_by_name(fresh) == expected


def test_ledger_keeps_moved_and_missing_ids_after_the_database_is_deleted(tmp_path):
    lib = tmp_path / "lib"
    files = tiny_library(lib, per_folder=2)
    db = db_at(tmp_path / "one.sqlite3")
    quick_scan(db, [lib])
    before = ids_by_name(db)
    moved = files[0]  # characters/… → backgrounds/renamed (same inode)
    (lib / "backgrounds").mkdir()
    moved.rename(lib / "backgrounds" / "renamed.safetensors")
    gone = files[1]
    backup = gone.read_bytes()
    gone.unlink()
    quick_scan(db, [lib])
    after = ids_by_name(db)
    assert after["renamed.safetensors"] == before[moved.name]
    assert after[gone.name] == before[gone.name]  # missing, ID kept

    fresh = db_at(tmp_path / "two.sqlite3")
    quick_scan(fresh, [lib])
    ids = ids_by_name(fresh)
    assert ids["renamed.safetensors"] == before[moved.name]
    assert gone.name not in ids  # never seen by this database …
    (lib / "restored").mkdir()
    (lib / "restored" / "copy.safetensors").write_bytes(backup)
    summary = quick_scan(fresh, [lib])
    assert summary.reclaimed == 1  # … but its ID came back from the ledger through the addnet hash
    assert ids_by_name(fresh)["copy.safetensors"] == before[gone.name]
    assert all(r.ok for r in run_checks(fresh))


def test_damaged_ledger_is_a_warning_not_a_failure(tmp_path):
    lib = tmp_path / "lib"
    tiny(lib / "a.safetensors")
    (lib / LEDGER_NAME).write_text("{not json")
    db = db_at(tmp_path / "db.sqlite3")
    summary = quick_scan(db, [lib], structure_only=True)
    assert summary.new == 1
    assert any("not valid JSON" in w for w in summary.warnings)
    with pytest.raises(UsageError, match="not a lorawb ID ledger"):
        parse_ledger({"ids": []}, "x.json")


def test_export_import_restores_ids(tmp_path):
    lib = tmp_path / "lib"
    tiny_library(lib, per_folder=2)
    one = db_at(tmp_path / "one.sqlite3")
    quick_scan(one, [lib])
    exported = export_ids(one)
    assert exported["format"] == "lorawb-ids" and len(exported["ids"]) == 14
    json.dumps(exported)  # plain JSON

    other = db_at(tmp_path / "two.sqlite3")  # another machine, another category mapping, no ledger
    quick_scan(other, [lib], ledger=False, categories={"characters": "PPL", "styles": "ART"})
    assert ids_by_name(other) != ids_by_name(one)
    result = import_ids(other, exported)
    assert (result.renamed, result.unchanged, result.conflicts) == (6, 8, [])  # characters/ and styles/ differed
    assert ids_by_name(other) == ids_by_name(one)
    assert all(r.ok for r in run_checks(other))
    again = import_ids(other, exported)
    assert again.unchanged == 14 and again.renamed == 0
