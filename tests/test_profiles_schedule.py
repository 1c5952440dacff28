"""Block schedules in the weights language: ranges, validation, storage, conversion and export."""

from __future__ import annotations

import pytest

from lorawb_core.errors import ProfileError
from lorawb_core.library.db import open_library
from lorawb_core.profiles import (
    convert_profile,
    create_profile,
    export_profiles,
    get_profile_by_id,
    import_profiles,
    parse_weights,
    update_profile,
)
from lorawb_core.profiles.schedule import PERCENT, STEPS, Span
from lorawb_core.server.profile_routes import ours_text


def sched(text: str, **kw) -> dict[str, list[str]]:
    return parse_weights(text, **({"family": "sd15"} | kw)).profile.to_dict().get("schedule", {})


def test_percent_fraction_and_step_ranges():
    assert sched("IN04-IN05=0.5@0-40%, default=1") == {"IN04": ["0.5@0-40%"], "IN05": ["0.5@0-40%"]}
    assert sched("IN04=1@0.3-1.0") == {"IN04": ["1@30-100%"]}  # fractions are stored as percent
    assert sched("OUT=1@5-20", family="flux") == {"OUT": ["1@5-20"]}
    assert sched("OUT03=1@10-end") == {"OUT03": ["1@10-end"]}


def test_default_carries_a_range_and_typed_blocks_keep_the_whole_run():
    p = parse_weights("default=1@0-50%, BASE=0", family="sd15").profile
    assert "BASE" not in p.schedule and p.weights["BASE"] == 0
    assert p.schedule["OUT11"] == (Span(1.0, 0.0, 0.5, PERCENT),)
    assert "REST" not in p.schedule  # default never covers REST


def test_several_ranges_per_block_and_a_later_plain_value_clears_them():
    assert sched("OUT03=1@0-30%, OUT03=0.5@30-100%") == {"OUT03": ["1@0-30%", "0.5@30-100%"]}
    assert sched("OUT03=1@0-30%, OUT03=0.5") == {}


@pytest.mark.parametrize(("text", "message"), [
    ("IN04=1@0-120%", "outside the run; percent ranges lie within 0-100%"),
    ("IN04=1@1.0-1.5", "outside the run"),
    ("IN04=1@50-40%", "starts at or after its end"),
    ("IN04=1@20-20", "starts at or after its end"),
    ("IN04=1@0-50%, IN04=1@40-60%", "overlap"),
    ("IN04=1@0-50%, IN05=1@3-5", "mix percent"),
    ("IN04=1@a-b", "is not START-END"),
    ("IN04=1@40%-end", "'-end' closes step ranges"),
    ("INS:stop=0", "starts at or after its end"),
    ("INS:start=1.5", "give a whole number"),
    ("INS:step=5", "step=START-END"),
])
def test_bad_ranges_are_refused_with_what_to_do(text, message):
    with pytest.raises(ProfileError, match=message):
        parse_weights(text, family="sd15")


def test_step_ranges_need_the_step_count_and_fit_in_it():
    span = Span(1.0, 5.0, 20.0, STEPS)
    with pytest.raises(ProfileError, match="give the sampler's steps in the node's 'steps' input"):
        span.percent()
    assert span.percent(20) == (0.25, 1.0)
    with pytest.raises(ProfileError, match="ends after the run's 10 steps"):
        span.percent(10)
    assert Span(1.0, 10.0, None, STEPS).percent(40) == (0.25, 1.0)


def test_lbw_start_stop_step_schedule_the_whole_lora():
    p = parse_weights("OUTD:start=10:stop=20", family="sd15").profile
    assert set(p.schedule) == {b for b, v in p.weights.items() if v}  # REST (1) included
    assert p.schedule["OUT03"] == (Span(1.0, 10.0, 20.0, STEPS),)
    assert sched("INS, step=5-15")["IN04"] == ["1@5-15"]
    assert sched("INS, start=5")["BASE"] == ["1@5-end"]


def test_conversion_keeps_ranges_of_the_blocks_the_target_has():
    p = parse_weights("IN04=0.5@0-40%, OUT03=1@10-60%", layout_id="sd15_unet_17").profile
    full = convert_profile(p, "sd15_unet_26").profile
    assert full.schedule == p.schedule
    assert convert_profile(full, "sd15_unet_17").profile.schedule == p.schedule


def test_exports_keep_ranges_and_read_back():
    p = parse_weights("BASE=1, OUT03=1@0-30%, OUT03=0.5@30-100%, IN04=0.5@0.3-1.0", family="sd15").profile
    for dialect in ("json", "csv"):
        back = import_profiles(export_profiles([p], dialect), dialect=dialect)
        assert back.skipped == [] and back.profiles[0].schedule == p.schedule, dialect
    csv_text = export_profiles([p], "csv")
    assert csv_text.splitlines()[0] == "name,layout,block,weight,range"
    assert "custom,sd15_unet_17,OUT03,0.5,30-100%" in csv_text.splitlines()
    ours = ours_text(p)
    assert "OUT03=1@0-30%, OUT03=0.5@30-100%" in ours
    again = parse_weights(ours, layout_id=p.layout_id).profile
    assert again.schedule == p.schedule and again.weights == p.weights
    with pytest.raises(ProfileError, match="LBW cannot express it .its blocks have ranges of their own"):
        export_profiles([p], "lbw")
    for dialect in ("kohya", "inspire"):
        with pytest.raises(ProfileError, match="no ranges of the run"):
            export_profiles([p], dialect)


def test_lbw_export_writes_start_stop_only_when_uniform_in_steps():
    p = parse_weights("OUTD:step=5-20", family="sd15").profile
    text = export_profiles([p], "lbw")
    assert text == "OUTD:1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0:start=5:stop=20\n"
    assert import_profiles(text, dialect="lbw").profiles[0].schedule == p.schedule
    pct = parse_weights("OUTD:start=5", family="sd15").profile
    pct.schedule = {b: (Span(v, 0.25, 1.0, PERCENT),) for b, v in pct.weights.items() if v}
    with pytest.raises(ProfileError, match="in percent and LBW's start=/stop= count steps"):
        export_profiles([pct], "lbw")


def test_stored_with_the_profile(tmp_path):
    db = open_library(tmp_path / "library.sqlite3")
    try:
        p = parse_weights("IN04=0.5@0-40%, OUT03=1@40-100%", layout_id="sd15_unet_17").profile
        stored = create_profile(db, "early-late", p.layout_id, p.weights, schedule=p.schedule)
        assert get_profile_by_id(db, stored.id).schedule == p.schedule
        assert db["profiles"].columns_dict["schedule"] is str
        moved = update_profile(db, stored.id, weights={"BASE": 0.5})
        assert moved.schedule == p.schedule  # a partial update keeps the ranges
        assert update_profile(db, stored.id, schedule={}).schedule == {}
        with pytest.raises(ProfileError, match="overlap"):
            update_profile(db, stored.id, schedule={"IN04": ["1@0-50%", "1@20-60%"]})
    finally:
        db.close()
