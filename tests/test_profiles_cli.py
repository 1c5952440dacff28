"""``lorawb profiles …`` end to end through ``lorawb_core.cli.main`` on a real SQLite file."""

from __future__ import annotations

import json

import pytest

from lorawb_core.cli import main
from lorawb_core.library.db import open_library
from lorawb_core.profiles import builtin_profiles, get_profile, import_profiles


@pytest.fixture
def dbp(tmp_path):
    return str(tmp_path / "library.sqlite3")


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_list_and_show_builtins(capsys, dbp):
    rc, out, _ = run(capsys, "profiles", "list", "--layout", "sd15_unet_17", "--db", dbp)
    assert rc == 0 and out.splitlines()[-1] == "10 profile(s)"
    assert out.splitlines()[3].split()[:4] == ["-", "sd15_unet_17", "INS", "builtin"]
    rc, out, _ = run(capsys, "profiles", "list", "--family", "flux", "--json", "--db", dbp)
    data = json.loads(out)
    assert rc == 0 and [p["name"] for p in data["profiles"]][:4] == ["ALL", "NONE", "ALL0.5", "DOUBLE"]
    assert data["profiles"][3]["builtin"] is True and data["profiles"][3]["stats"]["max"] == 1.0
    rc, out, _ = run(capsys, "profiles", "show", "OUTD", "--layout", "sd15_unet_17", "--json", "--db", dbp)
    shown = json.loads(out)
    assert rc == 0 and shown["schema"] == 1 and shown["label"] == "OUTD · sd15_unet_17"
    assert [b for b, v in shown["weights"].items() if v] == ["BASE", "OUT03", "OUT04", "OUT05", "OUT06", "REST"]
    rc, out, _ = run(capsys, "profiles", "show", "OUTD", "--layout", "sd15_unet_17", "--db", dbp)
    lines = out.splitlines()
    assert lines[0] == "OUTD · sd15_unet_17  (builtin)" and "  OUT03       1  " + "█" * 24 in lines
    assert "   IN01       0" in lines


def test_create_edit_duplicate_delete(capsys, dbp):
    rc, out, _ = run(capsys, "profiles", "create", "soft", "BASE=1, IN04-OUT05=0.5, default=0", "--family", "sd15",
                     "--description", "mid half", "--db", dbp)
    assert rc == 0 and out.splitlines()[-1] == "created soft · sd15_unet_17 (id 1)"
    assert "note: 8 block(s) not named take default=0" in out
    rc, out, _ = run(capsys, "profiles", "edit", "soft", "--set", "OUT03=2", "--name", "softer", "--db", dbp)
    assert rc == 0 and out.strip() == "updated softer · sd15_unet_17 (id 1)"
    rc, out, _ = run(capsys, "profiles", "edit", "1", "--weights", "OUTS", "--db", dbp)
    assert rc == 0
    db = open_library(dbp)
    try:
        p = get_profile(db, "softer", "sd15_unet_17")
        assert p.vector() == next(b for b in builtin_profiles("sd15_unet_17") if b.name == "OUTS").vector()
        assert p.description == "mid half"
    finally:
        db.close()
    rc, out, _ = run(capsys, "profiles", "duplicate", "MIDD", "my-midd", "--layout", "sdxl_unet_20", "--db", dbp)
    assert rc == 0 and out.strip() == "created my-midd · sdxl_unet_20 (id 2)"
    rc, out, _ = run(capsys, "profiles", "delete", "my-midd", "--db", dbp)
    assert rc == 0 and out.strip() == "deleted my-midd · sdxl_unet_20 (id 2)"
    rc, out, _ = run(capsys, "profiles", "list", "--no-builtins", "--db", dbp)
    assert out.splitlines()[-1] == "1 profile(s)" and "softer" in out


def test_errors_exit_1_with_the_message_and_usage_exits_2(capsys, dbp):
    rc, _, err = run(capsys, "profiles", "edit", "ALL", "--layout", "flux_dit_61", "--name", "x", "--db", dbp)
    assert rc == 1 and err.strip() == ("error: ALL · flux_dit_61 is a built-in profile and read-only; duplicate it "
                                       "first (`lorawb profiles duplicate ALL NEW_NAME --layout flux_dit_61`) and "
                                       "change the copy.")
    rc, _, err = run(capsys, "profiles", "show", "ALL", "--db", dbp)
    assert rc == 1 and "exists for several layouts" in err
    rc, _, err = run(capsys, "profiles", "show", "nope", "--layout", "wan_dit_32", "--db", dbp)
    assert rc == 1 and err.startswith("error: no profile named 'nope' for layout wan_dit_32; known for layout")
    rc, _, err = run(capsys, "profiles", "create", "x", "1,1,1", "--db", dbp)
    assert rc == 1 and "3 values fit no layout" in err
    rc, _, err = run(capsys, "profiles", "edit", "1", "--db", dbp)
    assert rc == 2 and "give --name, --weights, --set or --description" in err
    assert run(capsys, "profiles", "bogus")[0] == 2
    assert run(capsys, "profiles", "export", "--dialect", "yaml", "--db", dbp)[0] == 2


LBW_TEXT = ("INS:1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0\n# comment\nRAND:1,1,1,1,1,1,1,1,R,R,R,R,R,R,R,R,R\n"
            "soft:1,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5\n")


def test_import_dry_run_then_import(capsys, dbp, tmp_path):
    src = tmp_path / "lbwpresets.txt"
    src.write_text(LBW_TEXT, encoding="utf-8")
    rc, out, _ = run(capsys, "profiles", "import", str(src), "--dry-run", "--db", dbp)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == f"would import 1 profile(s) from {src} (dialect lbw)"
    assert lines[1] == "  + soft · sd15_unet_17" and lines[2] == "skipped 3:"
    assert lines[3] == "  - # comment: comment (a line with # is not a preset)."
    assert lines[4].startswith("  - RAND:1,1,1,1,1,1,1,1,R,R,R,R,R,R,R,R,R: not importable: 'R': R is random")
    assert lines[5].startswith("  - INS · sd15_unet_17: 'INS' is a built-in profile of layout sd15_unet_17")
    assert any(line.startswith("note: read as the lbw dialect") for line in lines)
    db = open_library(dbp)
    assert db["profiles"].count == 0
    db.close()
    rc, out, _ = run(capsys, "profiles", "import", str(src), "--prefix", "lbw-", "--family", "sd2", "--db", dbp)
    assert rc == 0 and "  + lbw-INS · sd2_unet_17 (id 1)" in out and "  + lbw-soft · sd2_unet_17 (id 2)" in out
    rc, out, _ = run(capsys, "profiles", "list", "--no-builtins", "--json", "--db", dbp)
    assert [(p["name"], p["source"]) for p in json.loads(out)["profiles"]] == [("lbw-INS", "imported"),
                                                                               ("lbw-soft", "imported")]


def test_export_to_stdout_and_file(capsys, dbp, tmp_path):
    rc, _, err = run(capsys, "profiles", "export", "--db", dbp)
    assert rc == 1 and "no profiles to export" in err
    rc, out, _ = run(capsys, "profiles", "export", "INS", "OUTD", "--layout", "sd15_unet_17", "--dialect", "lbw",
                     "--db", dbp)
    assert rc == 0 and out == "INS:1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0\nOUTD:1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0\n"
    target = tmp_path / "out" / "flux.csv"
    rc, out, _ = run(capsys, "profiles", "export", "--builtins", "--layout", "flux_dit_61", "--dialect", "csv", "-o",
                     str(target), "--db", dbp)
    assert rc == 0 and out.strip() == f"12 profile(s) written to {target} (csv)"
    back = import_profiles(target.read_text(encoding="utf-8"))
    assert [p.vector() for p in back.profiles] == [p.vector() for p in builtin_profiles("flux_dit_61")]
    assert [p.name for p in tmp_path.joinpath("out").iterdir()] == ["flux.csv"]  # no temp file left behind
    rc, _, err = run(capsys, "profiles", "export", "--builtins", "--layout", "wan_dit_32", "--dialect", "kohya",
                     "--db", dbp)
    assert rc == 1 and "kohya cannot express it" in err


def test_ranges_survive_create_and_edit_and_set_edits_them(capsys, dbp):
    """create keeps the ranges it is given; --set changes the named blocks' ranges (a plain value gives the whole run
    back) and leaves the others'; --weights replaces weights and ranges; show prints them."""
    def schedule():
        db = open_library(dbp)
        try:
            return {b: [s.text() for s in spans] for b, spans in get_profile(db, "timed", "sd15_unet_17").schedule.items()}
        finally:
            db.close()

    rc, _, _ = run(capsys, "profiles", "create", "timed", "IN04=0.5@0-40%, OUT03=1@0-30%, OUT03=0.5@30-100%, default=1",
                   "--family", "sd15", "--db", dbp)
    assert rc == 0 and schedule() == {"IN04": ["0.5@0-40%"], "OUT03": ["1@0-30%", "0.5@30-100%"]}
    rc, _, _ = run(capsys, "profiles", "edit", "timed", "--set", "OUT05-OUT06=1@0-50%, IN04=0.7", "--db", dbp)
    assert rc == 0 and schedule() == {"OUT03": ["1@0-30%", "0.5@30-100%"], "OUT05": ["1@0-50%"],
                                      "OUT06": ["1@0-50%"]}
    rc, out, _ = run(capsys, "profiles", "show", "timed", "--db", dbp)
    assert "1@0-30%, 0.5@30-100%" in out and [ln.split()[:2] for ln in out.splitlines() if "IN04" in ln] == [
        ["IN04", "0.7"]]
    rc, _, err = run(capsys, "profiles", "edit", "timed", "--set", "IN04=1@5-20", "--db", dbp)
    assert rc == 1 and "mix percent" in err  # the others are in percent: refused, nothing changed
    assert schedule()["OUT05"] == ["1@0-50%"]
    rc, _, _ = run(capsys, "profiles", "edit", "timed", "--weights", "IN04=1@10-end, default=0", "--db", dbp)
    assert rc == 0 and schedule() == {"IN04": ["1@10-end"]}
    rc, _, _ = run(capsys, "profiles", "edit", "timed", "--set", "IN04=1", "--db", dbp)
    assert rc == 0 and schedule() == {}
