"""Block schedules → hook groups: which blocks switch together, at which points of the run (host-agnostic).

A host whose scheduling scales a whole group of patches at keyframes (ComfyUI's hooks) needs one group per distinct
schedule. Each block with ranges gets a reference weight (its first non-zero range's value); its patches are added at
``strength × reference`` and the group's keyframes carry ``value / reference`` over each range and 0 between them, so
blocks whose ranges are equal up to that ratio share a group. Blocks without ranges share one group without keyframes
(active over the whole run).

>>> from lorawb_core.profiles import parse_weights
>>> p = parse_weights("IN04=0.5@0-40%, OUT03=1@0-40%, default=1", layout_id="sd15_unet_17").profile
>>> [(sorted(g.weights)[:2], g.keyframes) for g in plan_schedule(p.weights, p.schedule)][1]
(['IN04', 'OUT03'], [(1.0, 0.0), (0.0, 0.4)])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .profiles.schedule import Span


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
    every range) are left out. Step ranges are turned into fractions with ``steps`` (the sampler's step count; a
    ProfileError says how to give it when missing)."""
    whole = {b: float(v) for b, v in weights.items() if b not in schedule and v != 0}
    groups: dict[tuple, HookSpec] = {}
    for block, spans in schedule.items():
        ref = next((s.value for s in spans if s.value != 0), 0.0)
        if ref == 0:
            continue
        pieces = []
        for s in spans:
            a, b = s.percent(steps)
            pieces.append((a, b, s.value / ref))
        key = tuple(pieces)
        spec = groups.get(key)
        if spec is None:
            text = ", ".join(f"{_pct(a)}-{_pct(b)}%" + ("" if r == 1 else f" ×{r:g}") for a, b, r in pieces)
            spec = groups[key] = HookSpec({}, _keyframes(pieces), text)
        spec.weights[block] = ref
    return ([HookSpec(whole)] if whole else []) + list(groups.values())


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.6g}"
