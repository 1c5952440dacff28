"""The positional dialects other tools use for block weights: LBW, Inspire Pack and kohya sd-scripts.

All three write a vector per preset whose length says which blocks it covers; the mapping to our block ids:

* **LBW** (``lbwpresets.txt``, ``NAME:v,v,…``): 12 → ``sdxl_unet_12``, 17 → ``sd15_unet_17``, 20 →
  ``sdxl_unet_20``, 26 → ``sd15_unet_26``, 61 → ``flux_dit_61``, in the layouts' own block order (LBW's ids).
* **Inspire** (``lbw-preset.txt``, same line syntax, positional): 17 / 12 as LBW; 27 (SD-LyC) = BASE, IN01–IN11,
  middle_block 0/1/2, OUT00–OUT11 → ``sd15_unet_26`` (IN00 = 0, M00 only when the three middle values agree);
  28 the same with IN00 (a LyCORIS that trained conv_in); 21 / 22 (SDXL-LyC) = BASE, (IN00,) IN01–IN08, MID×3,
  OUT00–OUT08 → ``sdxl_unet_20`` likewise; 58 = BASE, D00–D18, S00–S37 →
  ``flux_dit_61`` with CLIP/T5/IN/OUT = BASE; 20 (FLUX-DBL-*) = BASE + D00–D18, the singles inheriting D18.
* **kohya** (``svd_merge_lora.py --lbws``): JSON lists of 12/17/20/26 values, LBW order.

Export writes the same forms. An Inspire SD-LyC/SDXL-LyC vector has no IN00 position (LyCORIS does not train
conv_in), so export needs IN00 = 0 (what import gives back) and refuses otherwise rather than lose the value;
Flux export needs CLIP = T5 = IN = OUT (Inspire's single BASE position) and writes the 58-value form.
The family hint picks SD 2.x (``family="sd2"``) for 17/26-value vectors; without it they are SD 1.x.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import ProfileError
from ..layouts import REST, get_layout
from ..skipped import Skipped
from .inspire_vectors import inspire_weights
from .model import Profile, fmt_weight
from .parse import token_problem
from .schedule import strip_lbw_options, uniform_span, whole_run

LBW_LAYOUTS = {12: "sdxl_unet_12", 17: "sd15_unet_17", 20: "sdxl_unet_20", 26: "sd15_unet_26", 61: "flux_dit_61"}
KOHYA_LAYOUTS = {n: lid for n, lid in LBW_LAYOUTS.items() if n != 61}
INSPIRE_COUNTS = (12, 17, 20, 21, 22, 27, 28, 58)
SD_SWAPPABLE = {"sd15_unet_17", "sd15_unet_26"}
ITEM_WIDTH = 70


@dataclass
class ImportReport:
    """What an import produced: validated profiles, what was skipped and why, notes, the dialect read."""

    profiles: list[Profile] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dialect: str = ""


def shorten(text: str, width: int = ITEM_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


class Collector:
    """Builds an :class:`ImportReport`: validates each profile, refuses repeats, keeps notes once."""

    def __init__(self, dialect: str, family: str | None, name_prefix: str) -> None:
        self.report = ImportReport(dialect=dialect)
        self.family = family
        self.prefix = name_prefix
        self.seen: set[tuple[str, str]] = set()
        self.sd1_default = False

    def skip(self, item: str, reason: str) -> None:
        self.report.skipped.append(Skipped(shorten(item), reason))

    def note(self, text: str) -> None:
        if text not in self.report.notes:
            self.report.notes.append(text)

    def sd_layout(self, layout_id: str) -> str:
        """SD 1.x layouts become SD 2.x with ``family="sd2"``; without a hint they stay SD 1.x (noted)."""
        if layout_id in SD_SWAPPABLE:
            if self.family == "sd2":
                return layout_id.replace("sd15_", "sd2_", 1)
            if self.family != "sd15":
                self.sd1_default = True
        return layout_id

    def add(self, item: str, name: str, layout_id: str, weights: dict[str, float], description: str = "",
            schedule: dict | None = None) -> None:
        try:
            profile = Profile(self.prefix + name.strip(), self.sd_layout(layout_id), weights, "imported",
                              description=description, schedule=dict(schedule or {}))
        except ProfileError as exc:
            self.skip(item, str(exc))
            return
        key = (profile.layout_id, profile.name)
        if key in self.seen:
            self.skip(item, f"a profile named {profile.name!r} for {profile.layout_id} came earlier in the input; "
                            "the first one is kept.")
            return
        self.seen.add(key)
        self.report.profiles.append(profile)

    def finish(self) -> ImportReport:
        if self.sd1_default:
            self.note("17- and 26-value vectors were read as SD 1.x (sd15_unet_17 / sd15_unet_26); import with "
                      "family 'sd2' for SD 2.x.")
        return self.report


def _preset_line(col: Collector, raw: str, dialect: str) -> tuple[str, list[str]] | None:
    """``(name, values)`` of a ``NAME:v,v,…`` line, or ``None`` after recording why it was skipped."""
    line = raw.strip()
    if not line:
        return None
    if "#" in line:
        col.skip(line, "comment (a line with # is not a preset).")
        return None
    if dialect == "inspire" and line.startswith("@"):
        col.skip(line, "Inspire XY generator line (@NAME:n…): it makes one-hot test vectors in Inspire's UI, "
                       "not a preset.")
        return None
    if ":" not in line:
        col.skip(line, "no NAME: prefix, so it is not a preset line.")
        return None
    name, _, values = line.partition(":")
    return name, [t.strip() for t in values.split(",")]


def _token_reasons(values: list[str]) -> list[str]:
    return [p for p in (token_problem(t) for t in values) if p]


def import_lbw(text: str, col: Collector) -> None:
    """``lbwpresets.txt``: a line is a preset only with ``:``, 12/17/20/26/61 values and no ``#``."""
    for raw in text.splitlines():
        try:
            line, span = strip_lbw_options(raw)  # LBW's start=/stop=/step= (steps) schedule the whole preset
        except ProfileError as exc:
            col.skip(raw, str(exc))
            continue
        parsed = _preset_line(col, line, "lbw")
        if parsed is None:
            continue
        name, values = parsed
        if len(values) not in LBW_LAYOUTS:
            col.skip(raw, f"{len(values)} values; LBW presets have 12, 17, 20, 26 or 61 values.")
            continue
        bad = _token_reasons(values)
        if bad:
            col.skip(raw, f"not importable: {'; '.join(bad[:3])}.")
            continue
        layout = get_layout(LBW_LAYOUTS[len(values)])
        weights = dict(zip(layout.block_ids, map(float, values), strict=True))
        col.add(raw, name, layout.id, weights, schedule=whole_run({**weights, REST: 1.0}, span) if span else None)
    col.note("In LBW, blocks that a 17- or 12-value vector does not list are 0 when it meets a LoCon/LyCORIS (LBW "
             "expands it to 26/20 blocks with 0); converting these profiles to the full layout does the same.")


def import_inspire(text: str, col: Collector) -> None:
    """Inspire Pack ``lbw-preset.txt``: positional vectors of 12, 17, 20 (Flux doubles), 21, 27 or 58 values."""
    for raw in text.splitlines():
        parsed = _preset_line(col, raw, "inspire")
        if parsed is None:
            continue
        name, values = parsed
        subs = [v for v in values if len(v.split()) > 1]
        if subs:
            col.skip(raw, f"'{subs[0]}' holds sub-values, which Inspire spreads over the keys inside one block; "
                          "lorawb weights whole blocks.")
            continue
        bad = _token_reasons(values)
        if bad:
            col.skip(raw, f"not importable: {'; '.join(bad[:3])}.")
            continue
        n = len(values)
        if n not in INSPIRE_COUNTS:
            col.skip(raw, f"{n} values; lorawb reads Inspire vectors of 12, 17, 20 (Flux doubles), 21, 22, 27, 28 "
                          "or 58 values. Other lengths are positions over the blocks one LoRA happens to contain and "
                          "name no block.")
            continue
        nums = [float(v) for v in values]
        if n in (12, 17):
            layout = get_layout(LBW_LAYOUTS[n])
            col.add(raw, name, layout.id, dict(zip(layout.block_ids, nums, strict=True)))
            continue
        try:
            read = inspire_weights(nums, None)
        except ProfileError as exc:
            col.skip(raw, str(exc))
            continue
        assert read is not None  # every other count of INSPIRE_COUNTS is one of inspire_weights' forms
        layout_id, weights, notes = read
        col.add(raw, name, layout_id, weights)
        for text in notes:
            col.note(text)


def import_kohya(text: str, col: Collector) -> None:
    """sd-scripts ``--lbws``: a JSON list of numbers, a list of such lists, or one list per line."""
    try:
        data = json.loads(text)
        entries = data if isinstance(data, list) and any(isinstance(x, list) for x in data) else [data]
    except ValueError:
        entries = []
        for line in text.splitlines():
            if line.strip() and not line.strip().startswith("#"):
                try:
                    entries.append(json.loads(line))
                except ValueError as exc:
                    col.skip(line, f"not a JSON list ({exc}).")
    for i, entry in enumerate(entries, 1):
        item = json.dumps(entry)
        if not isinstance(entry, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  for v in entry):
            col.skip(item, "not a JSON list of numbers.")
            continue
        if len(entry) not in KOHYA_LAYOUTS:
            col.skip(item, f"{len(entry)} values; sd-scripts --lbws takes 12, 17, 20 or 26 values.")
            continue
        layout = get_layout(KOHYA_LAYOUTS[len(entry)])
        col.add(item, f"kohya-{i}", layout.id, dict(zip(layout.block_ids, entry, strict=True)))
    col.note("sd-scripts gives blocks that a vector does not list weight 1 (LBW gives them 0); converting these "
             "profiles to the full layout fills 0 unless you ask for fill=1.")


def _cannot(profile: Profile, dialect: str, why: str) -> ProfileError:
    return ProfileError(f"profile {profile.label}: {dialect} cannot express it ({why}); export it as json or csv.")


def _lbw_vector(profile: Profile, dialect: str, table: dict[int, str]) -> list[float]:
    lid = profile.layout_id.replace("sd2_", "sd15_", 1)
    if lid not in table.values():
        counts = "/".join(str(n) for n in table)
        raise _cannot(profile, dialect, f"its {counts}-value vectors are for SD 1.x/2.x, SDXL"
                                        f"{' and Flux' if 61 in table else ''} layouts, not {profile.layout_id}")
    return profile.vector()


def _line(name: str, values: Sequence[float]) -> str:
    return f"{name}:{','.join(fmt_weight(v) for v in values)}"


def export_lbw(profiles: Sequence[Profile]) -> str:
    """``NAME:vector`` per profile; a schedule only as LBW's ``:start=N:stop=N`` (whole LoRA, in steps)."""
    return "".join(_line(p.name, _lbw_vector(p, "LBW", LBW_LAYOUTS)) + _lbw_steps(p) + "\n" for p in profiles)


def _lbw_steps(p: Profile) -> str:
    if not p.schedule:
        return ""
    ramps = [b for b, pieces in p.schedule.items() if any(s.is_ramp for s in pieces)]
    if ramps:
        raise _cannot(p, "LBW", f"{', '.join(ramps[:3])} {'has a ramp' if len(ramps) == 1 else 'have ramps'} "
                                "(0.2~1@…), and LBW's start=/stop= switch the whole LoRA at one weight")
    span = uniform_span(p.weights, p.schedule)
    if span is None:
        raise _cannot(p, "LBW", "its blocks have ranges of their own, and LBW's start=/stop= switch the whole LoRA")
    if span.unit != "steps":
        raise _cannot(p, "LBW", f"its range @{span.range_text()} is in percent and LBW's start=/stop= count steps; "
                                "write the ranges in steps (e.g. @5-20)")
    return f":start={int(span.start)}" + ("" if span.end is None else f":stop={int(span.end)}")


def export_kohya(profiles: Sequence[Profile]) -> str:
    out = []
    for p in profiles:
        if p.schedule:
            raise _cannot(p, "kohya", "sd-scripts block weights have no ranges of the run")
        if p.family == "flux":
            raise _cannot(p, "kohya", "sd-scripts has no Flux block weights")
        out.append("[" + ", ".join(fmt_weight(v) for v in _lbw_vector(p, "kohya", KOHYA_LAYOUTS)) + "]\n")
    return "".join(out)


def _inspire_vector(p: Profile) -> list[float]:
    w = p.weights
    lid = p.layout_id.replace("sd2_", "sd15_", 1)
    if lid in ("sd15_unet_17", "sdxl_unet_12"):
        return p.vector()
    if lid in ("sd15_unet_26", "sdxl_unet_20"):
        if w["IN00"] != 0:
            raise _cannot(p, "Inspire", f"its LyCORIS vector has no position for IN00 (conv_in), which is "
                                        f"{fmt_weight(w['IN00'])} here; set IN00 to 0 or export as lbw, which keeps "
                                        "every block")
        ins = [v for b, v in w.items() if b.startswith("IN") and b != "IN00"]
        outs = [v for b, v in w.items() if b.startswith("OUT")]
        return [w["BASE"], *ins, w["M00"], w["M00"], w["M00"], *outs]
    if lid == "flux_dit_61":
        base = {w[b] for b in ("CLIP", "T5", "IN", "OUT")}
        if len(base) > 1:
            shown = ", ".join(f"{b}={fmt_weight(w[b])}" for b in ("CLIP", "T5", "IN", "OUT"))
            raise _cannot(p, "Inspire", f"Inspire has one BASE position for CLIP, T5, IN and OUT, which differ "
                                        f"here ({shown}); make them equal")
        return [w["CLIP"], *(v for b, v in w.items() if b[0] in "DS" and b[1:].isdigit())]
    raise _cannot(p, "Inspire", f"Inspire's vectors cover SD 1.x/2.x, SDXL and Flux, not {p.layout_id}")


def export_inspire(profiles: Sequence[Profile]) -> str:
    for p in profiles:
        if p.schedule:
            raise _cannot(p, "Inspire", "its presets have no ranges of the run")
    return "".join(_line(p.name, _inspire_vector(p)) + "\n" for p in profiles)
