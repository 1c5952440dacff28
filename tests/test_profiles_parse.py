"""parse_weights: every form a user can type into a weights box, and the errors for the rest."""

from __future__ import annotations

import json

import pytest

from lorawb_core.errors import ProfileError, ProfileMismatch
from lorawb_core.layouts import REST, get_layout
from lorawb_core.profiles import ParsedWeights, builtin_profiles, parse_weights

OUTD17 = "1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0"


def ones(weights: dict[str, float]) -> list[str]:
    return [b for b, v in weights.items() if v == 1.0 and b != REST]


def test_bare_vector_with_family_picks_the_view():
    r = parse_weights(OUTD17, family="sd15")
    assert isinstance(r, ParsedWeights) and r.dialect == "vector"
    assert r.profile.layout_id == "sd15_unet_17" and r.profile.name == "custom" and r.profile.source == "user"
    assert ones(r.profile.weights) == ["BASE", "OUT03", "OUT04", "OUT05", "OUT06"]
    assert r.notes == ["17 values read as layout sd15_unet_17 (SD 1.x — 17 attention blocks)."]
    assert parse_weights(OUTD17, family="sd2").profile.layout_id == "sd2_unet_17"


def test_vector_whitespace_newlines_and_comments():
    text = "# OUTD by hand\n1 0 0 0   0 0 0 0\n1, 1, 1, 1,  # deep out\n0 0 0 0 0\n"
    assert parse_weights(text, family="sd15").profile.vector() == parse_weights(OUTD17, family="sd15").profile.vector()


@pytest.mark.parametrize("count, layout_id", [(12, "sdxl_unet_12"), (20, "sdxl_unet_20"), (61, "flux_dit_61"),
                                              (26, "sdxl_refiner_unet_26")])
def test_count_picks_the_layout_inside_the_family(count, layout_id):
    family = get_layout(layout_id).family
    assert parse_weights(",".join(["0.5"] * count), family=family).profile.layout_id == layout_id


@pytest.mark.parametrize("count, layout_id", [(20, "sdxl_unet_20"), (61, "flux_dit_61"), (62, "hunyuan_video_dit_62"),
                                              (28, "sd3_mmdit_28"), (32, "wan_dit_32")])
def test_unambiguous_counts_need_no_family(count, layout_id):
    assert parse_weights(" ".join(["1"] * count)).profile.layout_id == layout_id


@pytest.mark.parametrize("count, layouts", [
    (17, "sd15_unet_17, sd2_unet_17"), (12, "sdxl_unet_12, sdxl_refiner_unet_12"),
    (26, "sd15_unet_26, sd2_unet_26, sdxl_refiner_unet_26"), (42, "sd3_mmdit_42, wan_dit_42"),
])
def test_ambiguous_counts_ask_for_the_family(count, layouts):
    with pytest.raises(ProfileError) as exc:
        parse_weights(",".join(["1"] * count))
    assert str(exc.value) == (f"{count} values fit several layouts ({layouts}); give the family or the layout id to "
                              "choose one.")


def test_count_that_fits_nothing():
    with pytest.raises(ProfileError, match="13 values fit no layout of family sd15; it takes 17, 26 values"):
        parse_weights(",".join(["1"] * 13), family="sd15")
    with pytest.raises(ProfileError, match="5 values do not fit layout sdxl_unet_12, which takes 12 or 20 values"):
        parse_weights("1,1,1,1,1", layout_id="sdxl_unet_12")


def test_vector_for_the_view_is_converted_to_the_asked_full_layout():
    r = parse_weights(OUTD17, layout_id="sd15_unet_26")
    assert r.profile.layout_id == "sd15_unet_26"
    assert r.profile.vector() == next(p for p in builtin_profiles("sd15_unet_26") if p.name == "OUTD").vector()
    assert r.notes[-1] == ("Converted 'custom' from sd15_unet_17 to sd15_unet_26; 9 block(s) the source lacks take 0: "
                           "IN00, IN03, IN06, IN09, IN10, IN11, OUT00, OUT01, OUT02.")


def test_lbw_named_vector():
    r = parse_weights("MyOut : " + OUTD17, family="sd15")
    assert r.dialect == "lbw" and r.profile.name == "MyOut" and ones(r.profile.weights)[1] == "OUT03"


def test_random_and_node_tokens_are_refused_with_the_reason():
    with pytest.raises(ProfileError, match="'R': R is random"):
        parse_weights("1,1,1,1,1,1,1,1,R,R,R,R,R,R,R,R,R", family="sd15")
    with pytest.raises(ProfileError, match="'A': A is an Inspire node input"):
        parse_weights("SD-AOUT:A,1,1,1,1,1,1,1,1,1,1,1,A,A,A,A,A", family="sd15")
    with pytest.raises(ProfileError, match="'X': X takes LBW's extra prompt argument"):
        parse_weights("1 0 X")
    with pytest.raises(ProfileError, match="'Y' is not a number"):
        parse_weights("1,0,Y")


def test_preset_names():
    r = parse_weights("INS", layout_id="sd15_unet_17")
    assert r.dialect == "preset" and r.profile.source == "builtin" and r.notes == []
    assert r.profile.vector() == [1, 1, 1, 1] + [0] * 13
    r = parse_weights("  all0.5  ", family="flux")  # names match without case when nothing matches exactly
    assert r.profile.name == "ALL0.5" and r.profile.vector() == [0.5] * 61
    r = parse_weights("INS", family="sdxl")
    assert r.profile.layout_id == "sdxl_unet_12"
    assert r.notes == ["'INS' exists for sdxl_unet_12, sdxl_unet_20; took the one for sdxl_unet_12."]
    assert parse_weights("DBL-TAIL6").profile.layout_id == "flux_dit_61"  # only one layout has it


def test_ambiguous_preset_name_without_family():
    with pytest.raises(ProfileError, match=r"'OUTD' exists for several layouts \(sd15_unet_26, sd15_unet_17, "):
        parse_weights("OUTD")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ProfileError) as exc:
        parse_weights("FACE", layout_id="sdxl_unet_12")
    assert str(exc.value) == ("'FACE' is not a vector, assignments or a profile known for layout sdxl_unet_12 "
                              "(known for sdxl_unet_12: ALL, NONE, ALL0.5, INS, IND, INALL, MIDD, OUTD, OUTS, OUTALL)"
                              "; type a vector of numbers, BLOCK=value assignments, or one of those names.")


def test_assignments_with_ranges_and_default():
    r = parse_weights("BASE=1, IN04-OUT05=0.5, default=0", layout_id="sd15_unet_26")
    w = r.profile.weights
    assert r.dialect == "assignments" and w["BASE"] == 1 and w["IN03"] == 0 and w["OUT06"] == 0
    assert [b for b, v in w.items() if v == 0.5] == ["IN04", "IN05", "IN06", "IN07", "IN08", "IN09", "IN10", "IN11",
                                                     "M00", "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05"]
    assert r.notes == ["10 block(s) not named take default=0: IN00, IN01, IN02, IN03, OUT06, OUT07, OUT08, OUT09, "
                       "OUT10, OUT11.", "REST (the keys outside every block: time_embed, conv_in/conv_out …) is not "
                       "covered by default and stays 1; write REST=0 to weight them too."]
    assert w[REST] == 1.0


def test_assignments_default_is_one_and_later_wins():
    r = parse_weights("d00-d18 = 0\n# but keep one\nD07=0.25; S37=-1", family="flux")
    w = r.profile.weights
    assert r.profile.layout_id == "flux_dit_61"
    assert w["D00"] == 0 and w["D07"] == 0.25 and w["S37"] == -1 and w["S00"] == 1 and w["CLIP"] == 1
    assert r.notes[0] == "read as layout flux_dit_61 (Flux.1 — 19 double + 38 single blocks)."
    assert r.notes[1].startswith("41 block(s) not named take the default 1 (write default=… to change it): CLIP, T5")


def test_assignments_pick_the_smallest_layout_holding_the_blocks():
    assert parse_weights("IN04-OUT05=0", family="sd15").profile.layout_id == "sd15_unet_17"
    assert parse_weights("IN03=0", family="sd15").profile.layout_id == "sd15_unet_26"
    assert parse_weights("J30=0").profile.layout_id == "sd3_mmdit_42"  # only SD3.5 Large has J30
    with pytest.raises(ProfileError, match=r"blocks J10 fit several layouts \(sd3_mmdit_28, sd3_mmdit_42\)"):
        parse_weights("J10=0")


def test_assignment_errors_name_the_block():
    with pytest.raises(ProfileError, match="block 'IN03' is not in layout sd15_unet_17; its blocks are BASE, IN01"):
        parse_weights("IN03=1", layout_id="sd15_unet_17")
    with pytest.raises(ProfileError, match="range OUT05-IN04 runs backwards in layout sdxl_unet_12"):
        parse_weights("OUT05-IN04=1", layout_id="sdxl_unet_12")
    with pytest.raises(ProfileError, match="block IN04: weight 12 is outside the range"):
        parse_weights("IN04=12", layout_id="sdxl_unet_12")
    with pytest.raises(ProfileError, match="'IN04' is not an assignment"):
        parse_weights("BASE=1, IN04", layout_id="sdxl_unet_12")
    with pytest.raises(ProfileError, match="block Q99 is in no layout of family flux"):
        parse_weights("Q99=1", family="flux")


def test_json_block_map_and_profile_json():
    r = parse_weights('{"IN04": 0.5, "OUT00-OUT02": 0, "default": 0.25}', layout_id="sdxl_unet_12")
    assert r.dialect == "json"
    assert r.profile.vector() == [0.25, 0.5, 0.25, 0.25, 0.25, 0.25, 0, 0, 0, 0.25, 0.25, 0.25]
    doc = {"name": "mine", "layout": "sd15_unet_17", "weights": dict.fromkeys(get_layout("sd15_unet_17").block_ids, 0),
           "description": "off"}
    r = parse_weights(json.dumps(doc))
    assert r.profile.name == "mine" and r.profile.layout_id == "sd15_unet_17" and r.profile.description == "off"
    r = parse_weights(json.dumps({"schema": 1, "profiles": [doc]}), layout_id="sd15_unet_26")
    assert r.profile.layout_id == "sd15_unet_26" and r.notes[0].startswith("Converted 'mine' from sd15_unet_17")
    with pytest.raises(ProfileMismatch, match="for layout sd15_unet_17 .*, not for family flux"):
        parse_weights(json.dumps(doc), family="flux")
    with pytest.raises(ProfileError, match="holds 2 profiles, and a weights box takes one"):
        parse_weights(json.dumps({"schema": 1, "profiles": [doc, doc]}))
    with pytest.raises(ProfileError, match="look like JSON but do not parse"):
        parse_weights('{"IN04": 0.5,')


def test_profile_json_from_to_dict_parses_back():
    p = next(p for p in builtin_profiles("wan_dit_32") if p.name == "TAIL")
    assert parse_weights(json.dumps(p.to_dict())).profile.vector() == p.vector()


def test_layout_and_family_must_agree():
    with pytest.raises(ProfileMismatch, match="layout sdxl_unet_12 is of family sdxl, not sd15"):
        parse_weights("INS", family="sd15", layout_id="sdxl_unet_12")
    with pytest.raises(ProfileMismatch, match="layout sd15_unet_17 .* to layout flux_dit_61"):
        parse_weights('{"name": "a", "layout": "sd15_unet_17", "weights": [1]}'.replace("[1]", str([1] * 17)),
                      layout_id="flux_dit_61")


@pytest.mark.parametrize("text, fragment", [
    ("", "no weights given"), ("   # only a comment", "no weights given"),
    ("soft, hard", "cannot read 'soft, hard'"), ("[1, 2]", "cannot read"),
])
def test_everything_else_is_a_clear_error(text, fragment):
    with pytest.raises(ProfileError, match=fragment):
        parse_weights(text, family="sd15")


def test_unknown_family():
    with pytest.raises(ProfileError, match="unknown family 'sd4'; known families: sd15, sd2, sdxl"):
        parse_weights("INS", family="sd4")


def test_rest_is_a_named_entry_outside_the_blocks():
    r = parse_weights("REST=0, IN04=0.5", layout_id="sd15_unet_26")
    assert r.profile.weights[REST] == 0.0 and r.profile.weights["IN04"] == 0.5 and r.profile.rest == 0.0
    assert list(r.profile.weights)[-1] == REST and len(r.profile.vector()) == 26  # vectors never count REST
    assert parse_weights("IN04=0.5", layout_id="sd15_unet_26").profile.rest == 1.0  # LBW's rule: 1 unless named
    assert parse_weights('{"IN04": 1, "REST": 0.5}', layout_id="sd15_unet_26").profile.rest == 0.5
    assert parse_weights("NONE", layout_id="sd15_unet_17").profile.rest == 0.0
    assert parse_weights("ALL", layout_id="sd15_unet_17").profile.rest == 1.0
    assert parse_weights("ALL0.5", layout_id="sd15_unet_17").profile.rest == 1.0
    assert parse_weights(OUTD17, family="sd15").profile.rest == 1.0
    assert parse_weights("REST=0.25, IN04=1", family="sd15").profile.layout_id == "sd15_unet_17"  # REST picks none
    with pytest.raises(ProfileError, match="REST .* cannot end a range; write REST=value on its own"):
        parse_weights("IN04-REST=0", layout_id="sd15_unet_26")
    with pytest.raises(ProfileError, match="block REST: weight 11 is outside the range"):
        parse_weights("REST=11", layout_id="sd15_unet_26")


def test_a_view_profile_converted_keeps_its_rest():
    p = parse_weights("REST=0, default=1", layout_id="sd15_unet_17").profile
    assert parse_weights("REST=0, default=1", layout_id="sd15_unet_17").profile.rest == 0.0
    from lorawb_core.profiles import convert_profile

    assert convert_profile(p, "sd15_unet_26").profile.rest == 0.0


def test_convert_false_keeps_the_layout_the_text_was_written_for():
    r = parse_weights(OUTD17, layout_id="sd15_unet_26", convert=False)
    assert r.profile.layout_id == "sd15_unet_17" and r.notes == ["17 values read as layout sd15_unet_17 (SD 1.x — 17 "
                                                                  "attention blocks)."]
    r = parse_weights(",".join(["1"] * 26), layout_id="sd15_unet_26", convert=False)
    assert r.profile.layout_id == "sd15_unet_26" and r.notes == []
    converted = parse_weights(OUTD17, layout_id="sd15_unet_26")
    assert converted.profile.layout_id == "sd15_unet_26" and converted.notes[-1].startswith("Converted")


@pytest.mark.parametrize(("count", "family", "layout_id", "in00"), [
    (27, "sd15", "sd15_unet_26", 0.0), (28, "sd15", "sd15_unet_26", 0.5), (27, "sd2", "sd2_unet_26", 0.0),
    (21, "sdxl", "sdxl_unet_20", 0.0), (22, "sdxl", "sdxl_unet_20", 0.5)])
def test_inspire_lycoris_vectors_are_read_by_their_positions(count, family, layout_id, in00):
    ids = get_layout(layout_id).block_ids
    n_in = sum(b.startswith("IN") for b in ids) - (count == len(ids) + 1)
    values = [0.25] + [0.5] * n_in + [0.75] * 3 + [1.0] * (count - 4 - n_in)
    r = parse_weights(", ".join(map(str, values)), family=family)
    w = r.profile.weights
    assert r.profile.layout_id == layout_id and w["BASE"] == 0.25 and w["IN00"] == in00 and w["IN01"] == 0.5
    assert w["M00"] == 0.75 and w["OUT00"] == 1.0 and w[REST] == 1.0
    assert r.notes[0].startswith(f"{count} values read as Inspire Pack's vector for layout {layout_id}")
    values[n_in + 2] = 0.0  # middle_block 1 differs
    with pytest.raises(ProfileError, match=f"Inspire's {count}-value LyCORIS vector: middle_block 0/1/2 have"):
        parse_weights(", ".join(map(str, values)), family=family)


def test_inspire_flux_vector_and_counts_that_fit_nothing():
    r = parse_weights(",".join(["0.5"] + ["1"] * 57), family="flux")
    assert r.profile.layout_id == "flux_dit_61" and r.profile.weights["IN"] == 0.5 and r.profile.weights["S37"] == 1
    with pytest.raises(ProfileError, match="27 values fit no layout of family flux"):
        parse_weights(",".join(["1"] * 27), family="flux")
    with pytest.raises(ProfileError, match="23 values fit no layout of family sd15"):
        parse_weights(",".join(["1"] * 23), family="sd15")
