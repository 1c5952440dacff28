"""Profiles: validation, stats, JSON form, conversion between layouts of a family, and the built-in presets."""

from __future__ import annotations

import json
import math

import pytest

from lorawb_core.errors import LorawbError, ProfileError, ProfileMismatch
from lorawb_core.layouts import REST, get_layout, list_layouts
from lorawb_core.profiles import (
    WEIGHT_MAX,
    WEIGHT_MIN,
    Conversion,
    Profile,
    ProfileStats,
    builtin_profiles,
    convert_profile,
    validate_weights,
)

SD17 = ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00", "OUT03", "OUT04", "OUT05", "OUT06", "OUT07",
        "OUT08", "OUT09", "OUT10", "OUT11"]
# anchors.md §3: LBW DEF_WEIGHT_PRESET
LBW = {
    "NONE": [0] * 17,
    "ALL": [1] * 17,
    "INS": [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    "IND": [1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    "INALL": [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    "MIDD": [1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    "OUTD": [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    "OUTS": [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
    "OUTALL": [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    "ALL0.5": [0.5] * 17,
}


def builtin(layout_id: str, name: str) -> Profile:
    return next(p for p in builtin_profiles(layout_id) if p.name == name)


def test_validate_orders_by_layout_and_converts_ints():
    got = validate_weights("sdxl_unet_12", {"OUT05": 1, "BASE": 0.5, **{b: 0 for b in get_layout("sdxl_unet_12")
                                                                           .block_ids[1:-1]}})
    assert list(got) == get_layout("sdxl_unet_12").block_ids
    assert got["BASE"] == 0.5 and got["OUT05"] == 1.0 and isinstance(got["OUT05"], float)
    assert validate_weights("sd15_unet_17", {"OUT11": 2, "IN04": -1}, complete=False) == {"IN04": -1.0, "OUT11": 2.0}


def test_validate_names_the_unknown_block_and_lists_the_layout():
    with pytest.raises(ProfileError) as exc:
        validate_weights("sd15_unet_17", {"IN03": 1.0}, complete=False)  # IN03 is only in the 26-block layout
    assert str(exc.value) == ("block 'IN03' is not in layout sd15_unet_17; its blocks are " + ", ".join(SD17)
                              + " (and REST for the keys outside every block).")
    assert isinstance(exc.value, LorawbError) and isinstance(exc.value, ValueError)


@pytest.mark.parametrize("value, text", [
    (float("nan"), "block IN04: weight nan is not a finite number"),
    (float("inf"), "block IN04: weight inf is not a finite number"),
    (10.5, "block IN04: weight 10.5 is outside the range -10 … 10"),
    (-11, "block IN04: weight -11 is outside the range -10 … 10"),
    ("0.5", "block IN04: weight '0.5' is not a number"),
    (True, "block IN04: weight True is not a number"),
])
def test_validate_rejects_bad_values_naming_block_and_value(value, text):
    with pytest.raises(ProfileError, match="^" + text.replace(".", r"\.")):
        validate_weights("sd15_unet_17", {"IN04": value}, complete=False)


def test_range_edges_are_allowed():
    assert (WEIGHT_MIN, WEIGHT_MAX) == (-10.0, 10.0)
    assert validate_weights("sd15_unet_17", {"IN04": -10, "IN05": 10}, complete=False) == {"IN04": -10.0,
                                                                                            "IN05": 10.0}


def test_missing_blocks_are_listed_when_complete():
    with pytest.raises(ProfileError, match=r"layout sdxl_unet_12 needs a weight for every block; missing IN05, "
                                           r"IN07, IN08, M00, OUT00"):
        validate_weights("sdxl_unet_12", {"BASE": 1, "IN04": 1})


def test_unknown_layout_is_a_profile_error():
    with pytest.raises(ProfileError, match="unknown layout 'sd99_unet_3'; known layouts: flux_dit_61"):
        validate_weights("sd99_unet_3", {})


def test_profile_vector_stats_label_and_json_round_trip():
    p = Profile("mix", "sdxl_unet_12", dict(zip(get_layout("sdxl_unet_12").block_ids,
                                                [1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, -1], strict=True)), "user",
                description="  two   spaces ")
    assert p.vector() == [1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    assert p.stats() == ProfileStats(mean=2 / 12, variance=pytest.approx((1 + 4 + 1) / 12 - (2 / 12) ** 2),
                                     min=-1.0, max=2.0)
    assert p.label == "mix · sdxl_unet_12" and p.description == "two spaces"
    d = json.loads(json.dumps(p.to_dict()))
    assert d["family"] == "sdxl" and d["builtin"] is False and d["weights"]["M00"] == 2.0
    assert d["stats"]["min"] == -1.0 and d["label"] == "mix · sdxl_unet_12"
    back = Profile.from_dict(d)
    assert back == p
    assert Profile.from_dict({"name": "v", "layout": "sdxl_unet_12", "weights": [0.5] * 12}).vector() == [0.5] * 12


@pytest.mark.parametrize("name, fragment", [
    ("", "needs a name"), ("a:b", "contains ':'"), ("x,y", "contains ','"), ("0.5", "is a number"),
    ("@XY", "starts with '@'"), ("n" * 101, "use at most 100"),
])
def test_profile_names_that_would_break_exports_are_refused(name, fragment):
    with pytest.raises(ProfileError, match=fragment):
        Profile(name, "sd15_unet_17", dict.fromkeys(SD17, 1.0))


def test_profile_source_is_checked():
    with pytest.raises(ProfileError, match="source 'mine' is not one of user, builtin, imported"):
        Profile("x", "sd15_unet_17", dict.fromkeys(SD17, 1.0), "mine")


def test_lbw_builtins_for_sd1_17_are_lbws_exact_vectors():
    for layout_id in ("sd15_unet_17", "sd2_unet_17"):
        got = {p.name: p.vector() for p in builtin_profiles(layout_id)}
        assert list(got) == ["ALL", "NONE", "ALL0.5", "INS", "IND", "INALL", "MIDD", "OUTD", "OUTS", "OUTALL"]
        assert got == {name: [float(v) for v in vec] for name, vec in LBW.items()}
    ins = builtin("sd15_unet_17", "INS")
    assert ins.source == "builtin" and ins.id is None and ins.builtin
    assert [b for b, v in ins.weights.items() if v and b != REST] == ["BASE", "IN01", "IN02", "IN04"]
    assert [b for b, v in builtin("sd15_unet_17", "OUTD").weights.items() if v and b != REST] == ["BASE", "OUT03", "OUT04",
                                                                                    "OUT05", "OUT06"]


def test_26_block_builtins_are_the_17_set_expanded_with_zero():
    outd = builtin("sd15_unet_26", "OUTD")
    assert [b for b, v in outd.weights.items() if v and b != REST] == ["BASE", "OUT03", "OUT04", "OUT05", "OUT06"]
    assert outd.weights["IN00"] == 0.0 and outd.weights["OUT00"] == 0.0 and len(outd.vector()) == 26
    assert "outside the 17-block view at 0" in outd.description
    assert builtin("sd15_unet_26", "ALL").vector() == [1.0] * 26  # ALL means every block, not the expanded view


def test_sdxl_builtins():
    got = {p.name: [b for b, v in p.weights.items() if v and b != REST] for p in builtin_profiles("sdxl_unet_12")}
    assert got["INALL"] == ["BASE", "IN04", "IN05", "IN07", "IN08"]  # = Inspire SDXL-INALL
    assert got["OUTALL"] == ["BASE", "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05"]  # = Inspire SDXL-OUTALL
    assert got["INS"] == ["BASE", "IN04", "IN05"] and got["IND"] == ["BASE", "IN07", "IN08"]
    assert got["MIDD"] == ["BASE", "IN07", "IN08", "M00", "OUT00", "OUT01", "OUT02"]
    assert got["OUTD"] == ["BASE", "OUT00", "OUT01", "OUT02"] and got["OUTS"] == ["BASE", "OUT03", "OUT04", "OUT05"]
    mid20 = builtin("sdxl_unet_20", "MIDD")
    assert [b for b, v in mid20.weights.items() if v and b != REST] == got["MIDD"] and len(mid20.vector()) == 20


def test_flux_builtins():
    names = [p.name for p in builtin_profiles("flux_dit_61")]
    assert names == ["ALL", "NONE", "ALL0.5", "DOUBLE", "SINGLE", "DBL-FRONT7", "DBL-MID6", "DBL-TAIL6",
                     "SGL-00-09", "SGL-10-19", "SGL-20-29", "SGL-30-37"]
    front = builtin("flux_dit_61", "DBL-FRONT7")
    assert [b for b, v in front.weights.items() if v and b != REST] == ["CLIP", "T5", "IN", "D00", "D01", "D02", "D03", "D04",
                                                          "D05", "D06", "OUT"]
    single = builtin("flux_dit_61", "SINGLE").weights
    assert sum(single.values()) == 38 + 4 + 1 and single["D18"] == 0.0 and single["S37"] == 1.0
    tail = builtin("flux_dit_61", "SGL-30-37")
    assert [b for b, v in tail.weights.items() if v and b.startswith("S")] == [f"S{i}" for i in range(30, 38)]
    assert "CLIP, T5, IN and OUT at 1" in tail.description


def test_other_layouts_get_thirds_of_their_numbered_blocks():
    sd3 = {p.name: p.weights for p in builtin_profiles("sd3_mmdit_42")}  # 38 joint blocks: 13 / 13 / 12
    assert [b for b, v in sd3["FRONT"].items() if v and b != REST] == ["CLIP", "T5", "IN", *[f"J{i:02d}" for i in range(13)],
                                                         "OUT"]
    assert [b for b, v in sd3["TAIL"].items() if v and b.startswith("J")] == [f"J{i}" for i in range(26, 38)]
    wan = {p.name: p for p in builtin_profiles("wan_dit_32")}
    assert [b for b, v in wan["MIDDLE"].weights.items() if v and b != REST] == ["IN", *[f"B{i}" for i in range(10, 20)], "OUT"]
    assert wan["MIDDLE"].description == ("MIDDLE: the middle third of the numbered blocks (B10–B19) at 1, the other "
                                         "numbered blocks 0; IN, OUT at 1.")


def test_every_layout_has_builtins_with_descriptions():
    for layout in list_layouts():
        profiles = builtin_profiles(layout.id)
        assert [p.name for p in profiles][:3] == ["ALL", "NONE", "ALL0.5"]
        assert len(profiles) >= 6
        for p in profiles:
            assert p.description and "\n" not in p.description
            assert p.layout_id == layout.id and len(p.vector()) == len(layout.blocks)
    a = builtin_profiles("sd15_unet_17")[0]
    a.weights["BASE"] = 5.0  # callers get copies
    assert builtin_profiles("sd15_unet_17")[0].weights["BASE"] == 1.0


def test_convert_17_to_26_fills_zero_and_lists_the_filled_blocks():
    conv = convert_profile(builtin("sd15_unet_17", "OUTS"), "sd15_unet_26")
    assert isinstance(conv, Conversion)
    assert conv.filled == ["IN00", "IN03", "IN06", "IN09", "IN10", "IN11", "OUT00", "OUT01", "OUT02"]
    assert conv.dropped == []
    assert conv.profile.layout_id == "sd15_unet_26" and conv.profile.name == "OUTS"
    assert conv.profile.vector() == builtin("sd15_unet_26", "OUTS").vector()
    assert conv.note == ("converted 'OUTS' from sd15_unet_17 to sd15_unet_26; 9 block(s) the source lacks take 0: "
                         "IN00, IN03, IN06, IN09, IN10, IN11, OUT00, OUT01, OUT02.")
    assert convert_profile(builtin("sd15_unet_17", "ALL"), "sd15_unet_26", fill=1).profile.vector() == [1.0] * 26


def test_convert_26_to_17_drops_blocks():
    p = builtin("sdxl_unet_20", "ALL0.5")
    conv = convert_profile(p, "sdxl_unet_12")
    assert conv.filled == [] and conv.dropped == ["IN00", "IN01", "IN02", "IN03", "IN06", "OUT06", "OUT07", "OUT08"]
    assert conv.profile.vector() == [0.5] * 12
    assert "8 block(s) the target lacks were dropped: IN00, IN01, IN02, IN03, IN06, OUT06, OUT07, OUT08" in conv.note


def test_convert_to_the_same_layout_is_identity():
    p = builtin("flux_dit_61", "DOUBLE")
    conv = convert_profile(p, "flux_dit_61")
    assert conv.profile.vector() == p.vector() and conv.filled == [] and conv.dropped == []


def test_convert_across_families_names_both_layouts():
    with pytest.raises(ProfileMismatch) as exc:
        convert_profile(builtin("sd15_unet_17", "INS"), "sdxl_unet_12")
    assert str(exc.value).startswith("profile 'INS' is for layout sd15_unet_17 (sd15) and cannot be converted to "
                                     "layout sdxl_unet_12 (sdxl): that is another family")
    with pytest.raises(ProfileMismatch, match="sd3_mmdit_28 .* sd3_mmdit_42 .*another model size"):
        convert_profile(builtin("sd3_mmdit_28", "ALL"), "sd3_mmdit_42")
    assert isinstance(exc.value, ProfileError)


def test_convert_checks_the_fill():
    with pytest.raises(ProfileError, match="block fill: weight 20 is outside"):
        convert_profile(builtin("sd15_unet_17", "INS"), "sd15_unet_26", fill=20)
    assert math.isclose(convert_profile(builtin("sd15_unet_17", "INS"), "sd15_unet_26",
                                        fill=-0.5).profile.weights["IN00"], -0.5)
