"""Block schedules: the part of sampling over which a block's weight acts.

In the weights language a value may carry a range after ``@``::

    IN04-OUT05=0.5@0-40%      percent of the run (0–100 %)
    D00-D09=1@0.3-1.0         fractions of the run (a decimal point marks them; stored as percent)
    OUT=1@5-20                sampler steps: active from step 5 up to (not including) step 20
    OUT=1@10-end              steps, to the end of the run
    default=1@0-50%, BASE=0   ``default`` may carry a range too
    OUT=0.2~1@0-50%           a ramp: from 0.2 at the range's start to 1 at its end (``~``, not ``>``, which would
                              end an A1111 ``<lora:…>`` tag); a ramp always has a range

A block may hold several non-overlapping ranges (``OUT=1@0-30%, OUT=0.5@30-100%``); outside its ranges a scheduled
block is off (weight 0). A block without a range acts over the whole run. A ramp is cut into pieces of constant
weight, the first at the start weight, the last at the end weight, linear between: one piece per sampler step when
the step count is known, else ``RAMP_PIECES`` equal pieces (:mod:`lorawb_core.schedule_plan`). One profile writes all
its ranges either in percent or in steps; step ranges need the sampler's step count where they are used (ComfyUI's
hooks count in percent of the run: step ``k`` of ``N`` sits at ``k/N``, and a switch before step ``k`` is placed half
a step earlier, at ``(k - 0.5)/N``, so it falls between two steps). LBW's per-LoRA ``start=N``, ``stop=N`` and
``step=A-B`` (steps) are accepted after the weights (``OUTD:start=10:stop=20``, ``INS, start=5``) and schedule the
whole LoRA.

Schedules are stored per block as the piece texts (``{"IN04": ["0.5@0-40%"]}``), the form every export uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from ..errors import ProfileError
from ..layouts import REST
from .weights import check_weight, fmt_weight

PERCENT = "percent"
STEPS = "steps"
RAMP = "~"
RAMP_PIECES = 10  # a ramp without a known step count: this many equal pieces of constant weight
_NUM = r"\d+(?:\.\d*)?|\.\d+"
_RANGE = re.compile(rf"\s*({_NUM})\s*(%?)\s*-\s*({_NUM}|end)\s*(%?)\s*", re.IGNORECASE)
_LBW_OPTION = re.compile(r"(?:^|(?<=[:,;\s]))(start|stop|step)\s*=\s*([^:,;\s]+)", re.IGNORECASE)
_WEIGHT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

Schedule = dict[str, tuple["Span", ...]]


@dataclass(frozen=True)
class Span:
    """A weight over part of the run: ``[start, end)`` as fractions of the run (``PERCENT``) or sampler steps
    (``STEPS``; ``end=None`` = to the end)."""

    value: float
    start: float
    end: float | None
    unit: str
    end_value: float | None = None  # a ramp: the weight at the range's end (``value`` is the one at its start)

    @property
    def is_ramp(self) -> bool:
        return self.end_value is not None

    def weight_text(self) -> str:
        """``0.5``, or ``0.2~1`` for a ramp."""
        return fmt_weight(self.value) + (f"{RAMP}{fmt_weight(self.end_value)}" if self.is_ramp else "")

    def range_text(self) -> str:
        if self.unit == PERCENT:
            return f"{_pct(self.start)}-{_pct(self.end)}%"
        return f"{int(self.start)}-{'end' if self.end is None else int(self.end)}"

    def text(self) -> str:
        """``0.5@0-40%``: reads back to the same span."""
        return f"{self.weight_text()}@{self.range_text()}"

    def percent(self, steps: int | None = None) -> tuple[float, float]:
        """``(start, end)`` as fractions of the run; step spans need ``steps`` (the sampler's step count)."""
        if self.unit == PERCENT:
            return self.start, float(self.end)
        if not steps:
            raise ProfileError(f"the range @{self.range_text()} counts sampler steps, so it needs the step count: "
                               "give the sampler's steps in the node's 'steps' input, or write the range in percent "
                               "(e.g. @25-100%).")
        end = steps if self.end is None else self.end
        if end > steps:
            raise ProfileError(f"the range @{self.range_text()} ends after the run's {steps} steps; end it at "
                               f"{steps} at the latest (or write '-end').")
        return self.start / steps, end / steps


def _pct(fraction: float | None) -> str:
    return fmt_weight(round(float(fraction) * 100, 9))


def read_range(text: str, value: float, where: str) -> Span:
    """The text after ``@`` (``0-40%``, ``0.3-1.0``, ``5-20``, ``10-end``) as a validated :class:`Span`."""
    m = _RANGE.fullmatch(text)
    if not m:
        raise ProfileError(f"{where}: range @{text.strip()} is not START-END; write @0-40% (percent), @0.3-1.0 "
                           "(fractions of the run) or @5-20 (steps).")
    a, pa, b, pb = m.groups()
    if b.lower() == "end":
        if pa or "." in a:
            raise ProfileError(f"{where}: '-end' closes step ranges (@10-end); a percent range ends at 100% "
                               "(@40-100%).")
        return check_span(Span(value, float(int(a)), None, STEPS), where)
    if pa or pb:
        return check_span(Span(value, float(a) / 100, float(b) / 100, PERCENT), where, shown=f"{a}-{b}%")
    if "." in a or "." in b:
        return check_span(Span(value, float(a), float(b), PERCENT), where, shown=f"{a}-{b}")
    return check_span(Span(value, float(int(a)), float(int(b)), STEPS), where)


def check_span(span: Span, where: str, shown: str | None = None) -> Span:
    shown = shown or span.range_text()
    if span.unit == PERCENT:
        if not (0.0 <= span.start <= 1.0 and 0.0 <= span.end <= 1.0):
            raise ProfileError(f"{where}: range @{shown} is outside the run; percent ranges lie within 0-100% "
                               "(fractions within 0.0-1.0).")
        if span.start >= span.end:
            raise ProfileError(f"{where}: range @{shown} starts at or after its end; write START-END with "
                               "START < END.")
    elif span.end is not None and span.start >= span.end:
        raise ProfileError(f"{where}: step range @{shown} starts at or after its end; write START-END with "
                           "START < END.")
    return span


def split_value(text: str, where: str) -> tuple[str, Span | None]:
    """``0.5@0-40%`` → ``("0.5", Span)``, a ramp ``0.2~1@0-50%`` → ``("0.2", Span with end_value 1)``; a value
    without ``@`` → ``(text, None)``."""
    value, at, rng = text.partition("@")
    if not at:
        if RAMP in text:
            raise ProfileError(f"{where}: the ramp {text.strip()} needs the part of the run it spans; write e.g. "
                               f"{text.strip()}@0-100%.")
        return text, None
    first, ramp, last = (v.strip() for v in value.partition(RAMP))
    for v in (first, last) if ramp else (first,):
        if not _WEIGHT.fullmatch(v):
            raise ProfileError(f"{where}: '{v}' is not a number; write WEIGHT@START-END (0.5@0-40%) or a ramp "
                               "START_WEIGHT~END_WEIGHT@START-END (0.2~1@0-50%).")
    span = read_range(rng, check_weight(where, float(first)), where)
    if ramp:
        span = replace(span, end_value=check_weight(where, float(last)))
    return first, span


def add_piece(schedule: dict[str, list[Span]], block: str, span: Span) -> None:
    """Add ``span`` to ``block``'s pieces, refusing an overlap with a range it already has."""
    pieces = schedule.setdefault(block, [])
    for other in pieces:
        if other.unit != span.unit:
            continue
        a_end = float("inf") if span.end is None else span.end
        b_end = float("inf") if other.end is None else other.end
        if span.start < b_end and other.start < a_end:
            raise ProfileError(f"{block}: ranges @{other.range_text()} and @{span.range_text()} overlap; give each "
                               "part of the run one weight per block (e.g. @0-30% and @30-100%).")
    pieces.append(span)
    pieces.sort(key=lambda s: s.start)


def check_units(schedule: Mapping[str, Iterable[Span]]) -> None:
    units = {s.unit for pieces in schedule.values() for s in pieces}
    if len(units) > 1:
        raise ProfileError("the ranges mix percent (@0-40%) and steps (@5-20); write all of them one way, so that "
                           "they can be checked against each other.")


def validate_schedule(block_ids: list[str], raw: Mapping) -> Schedule:
    """A stored/imported schedule (``{block: ["0.5@0-40%", …]}``, Span objects accepted) checked against the
    layout's blocks; returned in layout order, REST last."""
    if not isinstance(raw, Mapping):
        raise ProfileError(f"a schedule is a mapping block → list of ranges, not {type(raw).__name__}.")
    unknown = [b for b in raw if b not in block_ids and b != REST]
    if unknown:
        raise ProfileError(f"the schedule names {', '.join(map(str, unknown[:5]))}, not blocks of this layout; its "
                           f"blocks are {', '.join(block_ids)} (and {REST}).")
    out: dict[str, list[Span]] = {}
    for block, pieces in raw.items():
        if isinstance(pieces, (str, Span)):
            pieces = [pieces]
        if not isinstance(pieces, (list, tuple)):
            raise ProfileError(f"{block}: the schedule holds {pieces!r}; give a list of ranges like \"0.5@0-40%\".")
        for piece in pieces:
            span = piece if isinstance(piece, Span) else _read_piece(piece, block)
            add_piece(out, block, check_span(span, block))
    check_units(out)
    order = [*block_ids, REST]
    return {b: tuple(out[b]) for b in order if out.get(b)}


def _read_piece(piece: object, block: str) -> Span:
    if not isinstance(piece, str) or "@" not in piece:
        raise ProfileError(f"{block}: schedule entry {piece!r} is not WEIGHT@START-END (e.g. \"0.5@0-40%\").")
    value, span = split_value(piece, block)
    assert span is not None
    return span


def schedule_json(schedule: Schedule) -> dict[str, list[str]]:
    return {b: [s.text() for s in pieces] for b, pieces in schedule.items()}


def block_text(block: str, weight: float, schedule: Schedule) -> str:
    """``OUT00=1`` or ``OUT00=0.5@0-40%, OUT00=1@40-100%``: one block in the assignments form."""
    pieces = schedule.get(block)
    if not pieces:
        return f"{block}={fmt_weight(weight)}"
    return ", ".join(f"{block}={s.text()}" for s in pieces)


def strip_lbw_options(text: str) -> tuple[str, Span | None]:
    """LBW's ``start=N``, ``stop=N``, ``step=A-B`` taken out of a weights text → (the rest, the span for the whole
    LoRA or ``None``)."""
    found = list(_LBW_OPTION.finditer(text))
    if not found:
        return text, None
    opts: dict[str, str] = {}
    for m in found:
        key = m[1].lower()
        if key in opts:
            raise ProfileError(f"{key}= is given twice; give it once.")
        opts[key] = m[2]
    rest = _LBW_OPTION.sub("", text)
    rest = re.sub(r"[:,;\s]+$", "", re.sub(r"([:,;])\s*[:,;]+", r"\1", rest)).strip()
    if "step" in opts and ("start" in opts or "stop" in opts):
        raise ProfileError("step=A-B and start=/stop= both give the active steps; give one of them.")
    if "step" in opts:
        a, dash, b = opts["step"].partition("-")
        if not dash:
            raise ProfileError(f"step={opts['step']}: LBW writes step=START-END (e.g. step=5-20).")
        start, stop = _int_opt("step", a), _int_opt("step", b)
    else:
        start = _int_opt("start", opts.get("start", "0"))
        stop = _int_opt("stop", opts["stop"]) if "stop" in opts else None
    return rest, check_span(Span(1.0, float(start), None if stop is None else float(stop), STEPS), "start/stop")


def _int_opt(key: str, raw: str) -> int:
    if not raw.strip().isdigit():
        raise ProfileError(f"{key}={raw}: LBW counts sampler steps, so give a whole number (e.g. {key}=10).")
    return int(raw)


def whole_run(weights: Mapping[str, float], span: Span) -> Schedule:
    """Every non-zero block (and REST) scheduled over ``span`` at its weight: LBW's start/stop for one LoRA."""
    return {b: (Span(v, span.start, span.end, span.unit),) for b, v in weights.items() if v != 0}


def uniform_span(weights: Mapping[str, float], schedule: Schedule) -> Span | None:
    """The one span every non-zero block has (what LBW's start/stop can say), else ``None``."""
    spans = set()
    for b, v in weights.items():
        pieces = schedule.get(b, ())
        if v == 0 and not pieces:
            continue
        if len(pieces) != 1 or pieces[0].value != v or pieces[0].is_ramp:
            return None
        spans.add((pieces[0].start, pieces[0].end, pieces[0].unit))
    if len(spans) != 1:
        return None
    start, end, unit = spans.pop()
    return Span(1.0, start, end, unit)


def assignments_schedule(block_ids: list[str], items: Iterable, default_span: Span | None, default: float,
                         unnamed: Iterable[str]) -> dict[str, list[Span]]:
    """The schedule a list of assignments (``first``, ``last``, ``value``, ``span``) writes, in order: a ranged
    assignment adds a piece to each block it covers, one without a range gives the block the whole run again;
    ``default_span`` schedules the blocks no assignment names."""
    schedule: dict[str, list[Span]] = {}
    for a in items:
        for b in _covered(block_ids, a):
            if a.span is None:
                schedule.pop(b, None)
            else:
                add_piece(schedule, b, replace(a.span, value=a.value))
    if default_span is not None:
        for b in unnamed:
            schedule[b] = [replace(default_span, value=default)]
    check_units(schedule)
    return schedule


def _covered(block_ids: list[str], a) -> list[str]:
    return [REST] if a.first == REST else block_ids[block_ids.index(a.first):block_ids.index(a.last) + 1]


def edit_schedule(block_ids: list[str], current: Mapping[str, Iterable[Span]], items: Iterable) -> Schedule:
    """``current`` after assignments that change only the blocks they name (``profiles edit --set``): a named block
    takes the ranges the assignments give it (none: the whole run again), the others keep theirs."""
    items = list(items)
    named = {b for a in items for b in _covered(block_ids, a)}
    changed = assignments_schedule(block_ids, items, None, 0.0, ())
    merged = {b: list(pieces) for b, pieces in current.items() if b not in named} | changed
    check_units(merged)
    return {b: tuple(merged[b]) for b in [*block_ids, REST] if merged.get(b)}
