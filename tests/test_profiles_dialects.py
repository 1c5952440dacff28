"""Import and export in the lbw, inspire, kohya, json and csv dialects; skipped items with reasons; round-trips."""

from __future__ import annotations

import json

import pytest

from lorawb_core.errors import ProfileError
from lorawb_core.layouts import REST, get_layout
from lorawb_core.profiles import (
    DIALECTS,
    ImportReport,
    Profile,
    Skipped,
    builtin_profiles,
    export_profiles,
    import_profiles,
)

LBW_FILE = """\
NONE:0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0
ALL:1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1
INS:1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0
OUTD:1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0
# my presets
XLIN:1,1,1,1,1,0,0,0,0,0,0,0
RAND:1,1,1,1,1,1,1,1,R,R,R,R,R,R,R,R,R
SHORT:1,0,1
EXTRA:1,0,0,0,0,0,0,0,X,X,X,X,0,0,0,0,0
just some words
OUTD:1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1
FLUXALL:""" + ",".join(["1"] * 61) + "\n"


def by_name(report: ImportReport) -> dict[str, Profile]:
    return {p.name: p for p in report.profiles}


def reasons(report: ImportReport) -> dict[str, str]:
    return {s.item: s.reason for s in report.skipped}


def test_lbw_import_reads_presets_and_says_why_it_skipped_the_rest():
    r = import_profiles(LBW_FILE, dialect="lbw")
    assert r.dialect == "lbw"
    got = by_name(r)
    assert list(got) == ["NONE", "ALL", "INS", "OUTD", "XLIN", "FLUXALL"]
    assert got["OUTD"].layout_id == "sd15_unet_17" and got["OUTD"].source == "imported"
    assert got["OUTD"].vector() == [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert got["XLIN"].layout_id == "sdxl_unet_12" and got["FLUXALL"].layout_id == "flux_dit_61"
    why = reasons(r)
    assert why["# my presets"] == "comment (a line with # is not a preset)."
    assert why["SHORT:1,0,1"] == "3 values; LBW presets have 12, 17, 20, 26 or 61 values."
    assert why["just some words"] == "no NAME: prefix, so it is not a preset line."
    assert why["RAND:1,1,1,1,1,1,1,1,R,R,R,R,R,R,R,R,R"].startswith(
        "not importable: 'R': R is random (a new value every generation), so it has no fixed weight")
    assert "X takes LBW's extra prompt argument" in why["EXTRA:1,0,0,0,0,0,0,0,X,X,X,X,0,0,0,0,0"]
    assert why["OUTD:1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1"] == ("a profile named 'OUTD' for sd15_unet_17 came earlier in "
                                                            "the input; the first one is kept.")
    assert any("blocks that a 17- or 12-value vector does not list are 0 when it meets a LoCon" in n for n in r.notes)
    assert any("read as SD 1.x (sd15_unet_17 / sd15_unet_26); import with family 'sd2'" in n for n in r.notes)


def test_lbw_family_hint_and_prefix():
    r = import_profiles(LBW_FILE, dialect="lbw", family="sd2", name_prefix="lbw-")
    got = by_name(r)
    assert got["lbw-INS"].layout_id == "sd2_unet_17" and got["lbw-XLIN"].layout_id == "sdxl_unet_12"
    assert not any("read as SD 1.x" in n for n in r.notes)


def test_lbw_values_out_of_range_are_skipped_with_the_block():
    r = import_profiles("HOT:" + ",".join(["1"] * 11 + ["12"]), dialect="lbw")
    assert r.profiles == []
    assert r.skipped == [Skipped(item="HOT:1,1,1,1,1,1,1,1,1,1,1,12",
                                 reason="block OUT05: weight 12 is outside the range -10 … 10; bring it into that "
                                        "range.")]


INSPIRE_FILE = "\n".join([
    "SD-OUTD:1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0",
    "SDXL-OUTALL:1,0,0,0,0,0,1,1,1,1,1,1",
    "SD-LyC-MID:" + ",".join(["0"] * 12 + ["1", "1", "1"] + ["0"] * 12),
    "SD-LyC-SPLIT:" + ",".join(["0"] * 12 + ["1", "0.5", "1"] + ["0"] * 12),
    "SDXL-LyC-IN:" + ",".join(["1"] * 9 + ["0"] * 12),
    "FLUX-ALL:" + ",".join(["0.5"] + ["1"] * 57),
    "FLUX-DBL-TAIL6:" + ",".join(["1"] + ["0"] * 13 + ["1"] * 6),
    "FLUX-DBL-FRONT7:" + ",".join(["1"] + ["1"] * 7 + ["0"] * 12),
    "SD-AOUT:A,1,1,1,1,1,1,1,1,1,1,1,A,A,A,A,A",
    "SD-ROUT:1,1,1,1,1,1,1,1,R,R,R,R,R,R,R,R,R",
    "SD-SUB:1,1 0 0.5,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
    "@SD-FULL-TEST:17",
    "ODD:" + ",".join(["1"] * 14),
])


def test_inspire_import_maps_positions_to_block_ids():
    r = import_profiles(INSPIRE_FILE, dialect="inspire")
    got = by_name(r)
    assert list(got) == ["SD-OUTD", "SDXL-OUTALL", "SD-LyC-MID", "SDXL-LyC-IN", "FLUX-ALL", "FLUX-DBL-TAIL6",
                         "FLUX-DBL-FRONT7"]
    mid = got["SD-LyC-MID"]
    assert mid.layout_id == "sd15_unet_26" and [b for b, v in mid.weights.items() if v] == ["M00", REST]
    xl = got["SDXL-LyC-IN"]
    assert xl.layout_id == "sdxl_unet_20"
    assert [b for b, v in xl.weights.items() if v] == ["BASE", "IN01", "IN02", "IN03", "IN04", "IN05", "IN06",
                                                       "IN07", "IN08", REST]  # IN00 has no position: 0
    flux = got["FLUX-ALL"].weights
    assert flux["CLIP"] == flux["T5"] == flux["IN"] == flux["OUT"] == 0.5 and flux["D00"] == flux["S37"] == 1
    tail = got["FLUX-DBL-TAIL6"].weights
    assert tail["D12"] == 0 and tail["D13"] == 1 and tail["S00"] == tail["S37"] == 1  # singles inherit D18
    front = got["FLUX-DBL-FRONT7"].weights
    assert front["D06"] == 1 and front["D07"] == 0 and front["S00"] == 0
    why = {s.item.split(":")[0]: s.reason for s in r.skipped}
    assert why["SD-LyC-SPLIT"] == ("Inspire's 27-value LyCORIS vector: middle_block 0/1/2 have different values "
                                   "(1, 0.5, 1); lorawb has one middle block M00, so it cannot keep them apart. Give "
                                   "the three middle values alike.")
    assert why["SD-AOUT"].startswith("not importable: 'A': A is an Inspire node input")
    assert why["SD-ROUT"].startswith("not importable: 'R': R is random")
    assert why["SD-SUB"].startswith("'1 0 0.5' holds sub-values")
    assert why["@SD-FULL-TEST"].startswith("Inspire XY generator line")
    assert why["ODD"].startswith("14 values; lorawb reads Inspire vectors of 12, 17, 20 (Flux doubles), 21, 22, 27, 28 "
                                 "or 58")
    notes = " ".join(r.notes)
    assert "IN00 (conv_in) has no position" in notes and "CLIP, T5, IN and OUT took the BASE value" in notes
    assert "the single blocks S00–S37 took the last value (D18's), as Inspire does" in notes


def test_kohya_import():
    text = json.dumps([[1] * 12, [0.5] * 17, [1, 2], [1] * 26, "x"])
    r = import_profiles(text, dialect="kohya")
    assert [(p.name, p.layout_id) for p in r.profiles] == [("kohya-1", "sdxl_unet_12"), ("kohya-2", "sd15_unet_17"),
                                                           ("kohya-4", "sd15_unet_26")]
    assert reasons(r) == {"[1, 2]": "2 values; sd-scripts --lbws takes 12, 17, 20 or 26 values.",
                          '"x"': "not a JSON list of numbers."}
    assert any("sd-scripts gives blocks that a vector does not list weight 1" in n for n in r.notes)
    one = import_profiles("[" + ",".join(["0"] * 20) + "]")
    assert one.dialect == "kohya" and one.profiles[0].layout_id == "sdxl_unet_20"
    lines = import_profiles("[" + ",".join(["1"] * 12) + "]\n[" + ",".join(["0"] * 12) + "]\n", dialect="kohya")
    assert [p.vector()[0] for p in lines.profiles] == [1.0, 0.0]


def test_json_import_validates_each_profile():
    ids = get_layout("sdxl_unet_12").block_ids
    doc = {"schema": 1, "profiles": [
        {"name": "good", "layout": "sdxl_unet_12", "weights": dict.fromkeys(ids, 0.5), "description": "half"},
        {"name": "bad", "layout": "sdxl_unet_12", "weights": {**dict.fromkeys(ids, 0.5), "IN00": 1}},
        {"name": "nolayout", "weights": {}},
        {"name": "vec", "layout": "wan_dit_32", "weights": [0] * 32},
    ]}
    r = import_profiles(json.dumps(doc))
    assert r.dialect == "json" and [p.name for p in r.profiles] == ["good", "vec"]
    assert r.profiles[0].description == "half" and r.profiles[1].vector() == [0.0] * 32
    why = [s.reason for s in r.skipped]
    assert why[0].startswith("block 'IN00' is not in layout sdxl_unet_12; its blocks are BASE, IN04")
    assert why[1] == "a profile needs 'name', 'layout' and 'weights'."
    with pytest.raises(ProfileError, match="the JSON has schema 2; this lorawb reads schema 1"):
        import_profiles(json.dumps({"schema": 2, "profiles": []}))


def test_csv_import():
    rows = ["name,layout,block,weight"]
    rows += [f"half,sdxl_unet_12,{b},0.5" for b in get_layout("sdxl_unet_12").block_ids]
    rows += ["part,sdxl_unet_12,BASE,1", "typo,sdxl_unet_12,BASE,abc", "short,sdxl_unet_12"]
    r = import_profiles("\n".join(rows) + "\n")
    assert r.dialect == "csv" and [p.name for p in r.profiles] == ["half"] and r.profiles[0].vector() == [0.5] * 12
    why = reasons(r)
    assert why["short,sdxl_unet_12"] == "row 16 has 2 columns; it needs name,layout,block,weight."
    assert why["typo,sdxl_unet_12"] == "row 15: weight 'abc' for block BASE is not a number."
    assert why["part,sdxl_unet_12"].startswith("layout sdxl_unet_12 needs a weight for every block; missing IN04")
    with pytest.raises(ProfileError, match="a profiles CSV starts with the header name,layout,block,weight"):
        import_profiles("a,b\n1,2\n", dialect="csv")


@pytest.mark.parametrize("text, dialect", [
    ("{}", "json"), ("[1]", "kohya"), ("Name, Layout, Block, Weight\n", "csv"), (LBW_FILE, "lbw"),
    (INSPIRE_FILE, "inspire"), ("FLUX-DBL-ALL:" + ",".join(["1"] * 20), "inspire"),
    ("XL-LYCO:" + ",".join(["1"] * 20), "lbw"),
])
def test_auto_detection(text, dialect):
    r = import_profiles(text)
    assert r.dialect == dialect and r.notes[0].startswith(f"read as the {dialect} dialect: ")


def test_import_errors():
    with pytest.raises(ProfileError, match="nothing to import"):
        import_profiles("  \n")
    with pytest.raises(ProfileError, match="unknown dialect 'a1111'; use one of lbw, inspire, kohya, json, csv"):
        import_profiles("x:1", dialect="a1111")
    with pytest.raises(ProfileError, match="cannot tell the dialect"):
        import_profiles("hello world")


def b(layout_id: str, name: str) -> Profile:
    return next(p for p in builtin_profiles(layout_id) if p.name == name)


def test_lbw_and_kohya_export_text():
    assert export_profiles([b("sd15_unet_17", "OUTD"), b("sdxl_unet_12", "ALL0.5")], "lbw") == (
        "OUTD:1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0\nALL0.5:" + ",".join(["0.5"] * 12) + "\n")
    assert export_profiles([b("sd15_unet_17", "INS")], "kohya") == "[1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]\n"


def test_inspire_export_repeats_m00_and_drops_in00():
    mid = b("sd15_unet_26", "MIDD")
    text = export_profiles([mid], "inspire")
    values = text.strip().split(":")[1].split(",")
    assert len(values) == 27 and values[12:15] == ["1", "1", "1"]  # M00 three times
    w = mid.weights
    assert values == [str(int(v)) for v in [w["BASE"], *(w[f"IN{i:02d}"] for i in range(1, 12)), w["M00"], w["M00"],
                                            w["M00"], *(w[f"OUT{i:02d}"] for i in range(12))]]
    flux = export_profiles([b("flux_dit_61", "DOUBLE")], "inspire").strip().split(":")[1].split(",")
    assert len(flux) == 58 and flux[:20] == ["1"] * 20 and flux[20:] == ["0"] * 38


def test_inspire_export_refuses_what_it_cannot_hold():
    with pytest.raises(ProfileError) as exc:
        export_profiles([b("sd15_unet_26", "ALL")], "inspire")
    assert str(exc.value) == ("profile ALL · sd15_unet_26: Inspire cannot express it (its LyCORIS vector has no "
                              "position for IN00 (conv_in), which is 1 here; set IN00 to 0 or export as lbw, which "
                              "keeps every block); export it as json or csv.")
    uneven = Profile("uneven", "flux_dit_61", {**b("flux_dit_61", "ALL").weights, "T5": 0.0})
    with pytest.raises(ProfileError, match=r"one BASE position for CLIP, T5, IN and OUT, which differ here \(CLIP=1, "
                                           r"T5=0, IN=1, OUT=1\)"):
        export_profiles([uneven], "inspire")


@pytest.mark.parametrize("dialect, layout_id, fragment", [
    ("lbw", "sd3_mmdit_28", "LBW cannot express it (its 12/17/20/26/61-value vectors are for SD 1.x/2.x, SDXL and "
                            "Flux layouts, not sd3_mmdit_28)"),
    ("lbw", "wan_dit_42", "not wan_dit_42"), ("inspire", "hunyuan_video_dit_62", "not hunyuan_video_dit_62"),
    ("kohya", "flux_dit_61", "kohya cannot express it (sd-scripts has no Flux block weights)"),
    ("kohya", "sdxl_refiner_unet_12", "not sdxl_refiner_unet_12"),
])
def test_positional_dialects_refuse_layouts_they_lack(dialect, layout_id, fragment):
    with pytest.raises(ProfileError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        export_profiles([b(layout_id, "ALL")], dialect)


def test_export_checks_dialect():
    with pytest.raises(ProfileError, match="unknown dialect 'auto'"):
        export_profiles([], "auto")
    assert json.loads(export_profiles([], "json")) == {"schema": 1, "profiles": []}
    assert export_profiles([], "csv") == "name,layout,block,weight\n"


def test_json_and_csv_export_shapes():
    p = b("sdxl_unet_12", "INS")
    doc = json.loads(export_profiles([p], "json"))
    assert doc["schema"] == 1 and doc["profiles"][0]["layout"] == "sdxl_unet_12"
    assert doc["profiles"][0]["weights"]["IN05"] == 1.0 and doc["profiles"][0]["description"] == p.description
    rows = export_profiles([p], "csv").splitlines()
    assert rows[:3] == ["name,layout,block,weight", "INS,sdxl_unet_12,BASE,1", "INS,sdxl_unet_12,IN04,1"]
    assert len(rows) == 14 and rows[-1] == "INS,sdxl_unet_12,REST,1"  # REST travels with the profile


def _inspire_refuses(p: Profile) -> bool:
    return p.layout_id in ("sd15_unet_26", "sd2_unet_26", "sdxl_unet_20") and p.weights["IN00"] != 0


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_expressible_builtin_round_trips(dialect):
    expressible = {"lbw": {"sd15", "sd2", "sdxl", "flux"}, "inspire": {"sd15", "sd2", "sdxl", "flux"},
                   "kohya": {"sd15", "sd2", "sdxl"}}.get(dialect)
    checked = refused = 0
    for p in builtin_profiles():
        if expressible is not None and p.family not in expressible or dialect == "inspire" and _inspire_refuses(p):
            with pytest.raises(ProfileError):
                export_profiles([p], dialect)
            refused += 1
            continue
        text = export_profiles([p], dialect)
        r = import_profiles(text, dialect=dialect, family=p.family)
        assert len(r.profiles) == 1 and r.skipped == [], (p.label, text, r.skipped)
        back = r.profiles[0]
        assert back.layout_id == p.layout_id and back.vector() == p.vector(), p.label
        if dialect not in ("kohya",):
            assert back.name == p.name
        checked += 1
    expected = {"lbw": 72, "inspire": 66, "kohya": 60, "json": 122, "csv": 122}[dialect]
    assert checked == expected and checked + refused == len(builtin_profiles())


def test_many_profiles_round_trip_in_one_file():
    profiles = [p for p in builtin_profiles() if p.family in ("sd15", "sdxl")]
    for dialect in ("lbw", "kohya", "json", "csv"):
        r = import_profiles(export_profiles(profiles, dialect), dialect=dialect)
        assert [(q.layout_id, q.vector()) for q in r.profiles] == [(q.layout_id, q.vector()) for q in profiles]
