"""Block schedules → hook groups: which blocks switch together, at which points of the run (host-agnostic).

A host whose scheduling scales a whole group of patches at keyframes (ComfyUI's hooks) needs one group per distinct
schedule. Each block with ranges gets a reference weight (its first non-zero weight); its patches are added at
``strength × reference`` and the group's keyframes carry ``weight / reference`` over each piece of the run and 0
between its ranges, so blocks whose ranges are equal up to that ratio share a group. Blocks without ranges share one
group without keyframes (active over the whole run).

Where the run is cut: a percent range at its own fractions; a step range ``a-b`` of ``N`` steps half a step before
its steps, at ``(a - 0.5)/N`` and ``(b - 0.5)/N`` (0 and 1 at the ends of the run), so a switch falls between two
steps instead of on one (ComfyUI compares each step's sigma with the keyframe's, and step ``k`` of a timestep-uniform
scheduler lies within a thousandth of ``k/N`` on either side). A ramp (``0.2~1@0-50%``) is cut into pieces of constant
weight: with the step count, one piece per step of the range (the cuts between its steps, half a step before each),
else ``RAMP_PIECES`` equal pieces; the first piece has the start weight, the last the end weight, linear between.

>>> from lorawb_core.profiles import parse_weights
>>> p = parse_weights("IN04=0.5@0-40%, OUT03=1@0-40%, default=1", layout_id="sd15_unet_17").profile
>>> [(sorted(g.weights)[:2], g.keyframes) for g in plan_schedule(p.weights, p.schedule)][1]
(['IN04', 'OUT03'], [(1.0, 0.0), (0.0, 0.4)])
>>> p = parse_weights("OUT03=0.25~1@0-100%, default=0, REST=0", layout_id="sd15_unet_17").profile
>>> [(g.weights, g.keyframes, g.ranges) for g in plan_schedule(p.weights, p.schedule, steps=4)]
[({'OUT03': 0.25}, [(1.0, 0.0), (2.0, 0.125), (3.0, 0.375), (4.0, 0.625)], '0-100% ×1~4 (4 steps)')]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .profiles.schedule import PERCENT, RAMP_PIECES, Span

_EPS = 1e-9  # a step exactly on a percent range's start belongs to it (k/N computed in floats)


@dataclass
class HookSpec:
    """Blocks that switch together: their weights (the patch multipliers) and the group's keyframes as
    ``(strength, start fraction)``; no keyframes = the whole run."""

    weights: dict[str, float]
    keyframes: list[tuple[float, float]] = field(default_factory=list)
    ranges: str = "whole run"  # how the report names the schedule

    @property
    def active_fraction(self) -> float:
        """How much of the run the group is on (any non-zero strength)."""
        if not self.keyframes:
            return 1.0
        ends = [*(start for _, start in self.keyframes[1:]), 1.0]
        return sum(end - start for (s, start), end in zip(self.keyframes, ends, strict=True) if s != 0)


@dataclass(frozen=True)
class Piece:
    """A part of the run ``[start, end)`` (fractions) at one weight."""

    start: float
    end: float
    weight: float


def span_pieces(span: Span, steps: int | None = None) -> list[Piece]:
    """Where ``span`` acts, as pieces of constant weight (one for a plain range; a ramp's pieces, see the module
    docstring). Step ranges need ``steps``: a ProfileError says how to give it."""
    a, b = span.percent(steps)  # validates: a step range needs the count and must end within it
    in_range: list[int] = []
    if steps:
        if span.unit == PERCENT:
            in_range = [k for k in range(steps) if a - _EPS <= k / steps < b - _EPS]
        else:
            last = steps if span.end is None else int(span.end)
            in_range = list(range(int(span.start), last))
            a, b = _cut(in_range[0] if in_range else last, steps), _cut(last, steps)
    if not span.is_ramp:
        return [Piece(a, b, span.value)]
    if steps:
        cuts = [a, *(_cut(k, steps) for k in in_range[1:]), b]
    else:
        cuts = [a + (b - a) * i / RAMP_PIECES for i in range(RAMP_PIECES + 1)]
    n = len(cuts) - 1
    v0, v1 = span.value, float(span.end_value)
    return [Piece(cuts[i], cuts[i + 1], v0 + (v1 - v0) * i / (n - 1) if n > 1 else v0) for i in range(n)]


def _cut(k: int, steps: int) -> float:
    """The fraction of the run a switch before step ``k`` is placed at: half a step earlier (0 and 1 at the ends)."""
    if k <= 0:
        return 0.0
    return 1.0 if k >= steps else (k - 0.5) / steps


def _keyframes(pieces: list[tuple[float, float, float]]) -> list[tuple[float, float]]:
    """``(start, end, relative strength)`` pieces (sorted, not overlapping) → keyframes ``(strength, start)``."""
    frames: list[tuple[float, float]] = []
    t = 0.0
    for start, end, rel in pieces:
        if start > t or (not frames and start > 0):
            frames.append((0.0, t))
        frames.append((rel, start))
        t = end
    if t < 1.0:
        frames.append((0.0, t))
    return frames


def plan_schedule(weights: Mapping[str, float], schedule: Mapping[str, tuple[Span, ...]],
                  steps: int | None = None) -> list[HookSpec]:
    """One :class:`HookSpec` per distinct schedule, the whole-run group first; blocks at 0 over the whole run (or in
    every range) are left out. Step ranges are placed with ``steps`` (the sampler's step count; a ProfileError says
    how to give it when missing); ramps are cut per step with it, in ``RAMP_PIECES`` pieces without it."""
    whole = {b: float(v) for b, v in weights.items() if b not in schedule and v != 0}
    groups: dict[tuple, HookSpec] = {}
    for block, spans in schedule.items():
        ref = next((v for s in spans for v in (s.value, s.end_value) if v), 0.0)
        if ref == 0:
            continue
        pieces = tuple((p.start, p.end, p.weight / ref) for s in spans for p in span_pieces(s, steps)
                       if p.end > p.start)
        spec = groups.get(pieces)
        if spec is None:
            spec = groups[pieces] = HookSpec({}, _keyframes(list(pieces)), _describe(spans, ref, steps))
        spec.weights[block] = ref
    return ([HookSpec(whole)] if whole else []) + list(groups.values())


def _describe(spans: tuple[Span, ...], ref: float, steps: int | None) -> str:
    """``0-40%``, ``40-100% ×0.5``, ``0-50% ×0.2~1 (10 pieces)``: the group's ranges for the report."""
    parts = []
    for s in spans:
        a, b = s.percent(steps)
        text = f"{_pct(a)}-{_pct(b)}%" if s.unit == PERCENT else f"steps {s.range_text()} of {steps}"
        if s.is_ramp:
            pieces = f"{len(span_pieces(s, steps))} steps" if steps else f"{RAMP_PIECES} pieces"
            text += f" ×{s.value / ref:g}~{s.end_value / ref:g} ({pieces})"
        elif s.value != ref:
            text += f" ×{s.value / ref:g}"
        parts.append(text)
    return ", ".join(parts)


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.6g}"
