"""Ramps (``OUT03=0.2~1@0-50%``): parsing, refusals, storage and export, and how the plan cuts them (and step
ranges) into pieces of the run."""

from __future__ import annotations

import pytest

from lorawb_core.errors import ProfileError
from lorawb_core.profiles import export_profiles, import_profiles, parse_weights
from lorawb_core.profiles.schedule import PERCENT, RAMP_PIECES, STEPS, Span
from lorawb_core.schedule_plan import plan_schedule, span_pieces


def profile(text: str):
    return parse_weights(text, layout_id="sd15_unet_17").profile


def test_a_ramp_reads_stores_and_writes_back():
    p = profile("OUT03=0.2~1@0-50%, IN04=1~0@50-100%, default=1")
    assert p.schedule["OUT03"] == (Span(0.2, 0.0, 0.5, PERCENT, end_value=1.0),)
    assert p.weights["OUT03"] == 0.2  # the weight over the whole run elsewhere (Block Weight Apply): the start weight
    assert p.to_dict()["schedule"] == {"IN04": ["1~0@50-100%"], "OUT03": ["0.2~1@0-50%"]}
    assert profile("IN04=1~0@5-end").to_dict()["schedule"] == {"IN04": ["1~0@5-end"]}
    again = profile(", ".join(f"{b}={t}" for b, ts in p.to_dict()["schedule"].items() for t in ts) + ", default=1")
    assert again.schedule == p.schedule


@pytest.mark.parametrize("text, message", [
    ("OUT03=0.2~1", "the ramp 0.2~1 needs the part of the run it spans; write e.g. 0.2~1@0-100%"),
    ("OUT03=0.2~x@0-50%", "'x' is not a number"),
    ("OUT03=0.2~1@50-40%", "starts at or after its end"),
    ("OUT03=0.2~99@0-50%", "OUT03"),
])
def test_bad_ramps_are_refused_with_the_reason(text, message):
    with pytest.raises(ProfileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        profile(text)


def test_json_and_csv_keep_a_ramp_and_lbw_refuses_it():
    p = profile("OUT03=0.2~1@0-50%, IN04=0.5@50-100%")
    for dialect in ("json", "csv"):
        text = export_profiles([p.__class__("ramp", p.layout_id, p.weights, "user", schedule=p.schedule)], dialect)
        assert "0.2~1" in text
        back = import_profiles(text, dialect=dialect).profiles[0]
        assert back.schedule == p.schedule, dialect
    steps = profile("OUT03=0.2~1@0-10, default=0")
    with pytest.raises(ProfileError, match=r"LBW cannot express it \(OUT03 has a ramp"):
        export_profiles([steps.__class__("s", steps.layout_id, steps.weights, "user", schedule=steps.schedule)], "lbw")


def test_with_the_step_count_a_ramp_has_one_piece_per_step_from_its_start_to_its_end_weight():
    pieces = span_pieces(Span(0.2, 2, 6, STEPS, end_value=1.0), steps=8)  # steps 2, 3, 4, 5 of 8
    assert [p.weight for p in pieces] == pytest.approx([0.2, 0.2 + 0.8 / 3, 0.2 + 1.6 / 3, 1.0], abs=1e-12)
    assert [(p.start, p.end) for p in pieces] == [(1.5 / 8, 2.5 / 8), (2.5 / 8, 3.5 / 8), (3.5 / 8, 4.5 / 8),
                                                  (4.5 / 8, 5.5 / 8)]  # the cuts fall between steps
    percent = span_pieces(Span(0.0, 0.3, 1.0, PERCENT, end_value=1.0), steps=4)  # steps at 50 % and 75 % are in it
    assert [(p.start, p.end, p.weight) for p in percent] == [(0.3, 0.625, 0.0), (0.625, 1.0, 1.0)]


def test_without_the_step_count_a_ramp_has_ramp_pieces_equal_pieces():
    pieces = span_pieces(Span(1.0, 0.0, 0.5, PERCENT, end_value=0.1))
    assert len(pieces) == RAMP_PIECES and pieces[0].weight == 1.0 and pieces[-1].weight == pytest.approx(0.1)
    assert pieces[0].start == 0.0 and pieces[-1].end == 0.5
    assert all(a.end == pytest.approx(b.start) for a, b in zip(pieces[:-1], pieces[1:], strict=True))
    with pytest.raises(ProfileError, match="needs the step count"):
        span_pieces(Span(1.0, 2, 6, STEPS, end_value=0.0))


def test_step_ranges_switch_half_a_step_before_their_steps():
    """Step k of N sits at k/N of the run only to within a thousandth for ComfyUI's schedulers, so a switch exactly
    at k/N can land after step k (seen on 6 and 7 steps with "simple"); half a step earlier it cannot."""
    (spec,) = [g for g in plan_schedule(*_ws("IN04=1@1-3, default=0, REST=0"), steps=6)]
    assert spec.keyframes == [(0.0, 0.0), (1.0, 0.5 / 6), (0.0, 2.5 / 6)] and spec.ranges == "steps 1-3 of 6"
    (spec,) = plan_schedule(*_ws("IN04=1@0-end, default=0, REST=0"), steps=6)
    assert spec.keyframes == [(1.0, 0.0)]


def test_blocks_with_proportional_ramps_share_one_hook():
    specs = plan_schedule(*_ws("IN04=0.2~1@0-50%, IN05=0.4~2@0-50%, OUT03=0.2~0.6@0-50%, default=0, REST=0"))
    assert [sorted(s.weights) for s in specs] == [["IN04", "IN05"], ["OUT03"]]
    assert specs[0].weights == {"IN04": 0.2, "IN05": 0.4} and specs[0].ranges == "0-50% ×1~5 (10 pieces)"


def _ws(text: str):
    p = profile(text)
    return p.weights, p.schedule
