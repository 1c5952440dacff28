"""Two-way config: hand edits of default_weight and notes in an organized folder's config.yaml reach the library
(and the LoRA's details, which the panel shows and "+ Load node" takes its strength from) at the next scan."""

from __future__ import annotations

import os
import time

import pytest
from library_helpers import quick_scan
from organize_helpers import make_drop, run

from lorawb_core.library.db import open_library
from lorawb_core.library.search import get_lora


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAWB_CONFIG", str(tmp_path / "no-config.json"))


def _edit(path, old, new):
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")
    t = time.time_ns() + 10**9  # a later mtime however coarse the filesystem clock
    os.utime(path, ns=(t, t))


def test_hand_edits_of_config_yaml_reach_the_library_at_the_next_scan(tmp_path):
    drop, root, db_path = tmp_path / "drop", tmp_path / "root", tmp_path / "lib.sqlite3"
    root.mkdir()
    make_drop(drop, 2)
    run(db_path, drop, root)
    config = root / "lora_0_ünï" / "config.yaml"
    with open_library(db_path) as db:
        quick_scan(db, [root], structure_only=True)
        sid = db.execute("SELECT stable_id FROM loras WHERE file_name = 'lora 0 ünï.safetensors'").fetchone()[0]
        entry = get_lora(db, sid)
        assert entry.default_weight == 1.0 and entry.notes is None
    _edit(config, "default_weight: 1.0", "default_weight: 0.65")
    _edit(config, "notes: ''", "notes: 'strong at 0.65; <b>not</b> above 0.8'")
    with open_library(db_path) as db:
        quick_scan(db, [root], structure_only=True)
        entry = get_lora(db, sid)
        assert entry.default_weight == 0.65 and entry.notes == "strong at 0.65; <b>not</b> above 0.8"
        assert entry.to_dict()["default_weight"] == 0.65  # what GET /lorawb/loras/{id} and the panel get
        other = db.execute("SELECT stable_id FROM loras WHERE file_name = 'lora 1 ünï.safetensors'").fetchone()[0]
        assert get_lora(db, other).default_weight == 1.0
    _edit(config, "default_weight: 0.65", "default_weight: lots")  # not a number: no default weight
    with open_library(db_path) as db:
        quick_scan(db, [root], structure_only=True)
        assert get_lora(db, sid).default_weight is None
    _edit(config, "default_weight: lots", "default_weight: [unclosed")  # not YAML: kept as it was, with a warning
    with open_library(db_path) as db:
        summary = quick_scan(db, [root], structure_only=True)
        assert any("cannot read it as YAML" in w for w in summary.warnings)
        assert get_lora(db, sid).notes == "strong at 0.65; <b>not</b> above 0.8"
    config.unlink()
    with open_library(db_path) as db:
        quick_scan(db, [root], structure_only=True)
        entry = get_lora(db, sid)
        assert entry.default_weight is None and entry.notes is None
