"""Multi-LoRA compose: the compatibility gate, its warnings, and the combined per-block graph of a stack.

The gate refuses a whole stack and lists every offending entry with the reason: unknown or missing LoRA, unreadable
file, family unknown (no layout), base family (or model size) different from the rest or from the model, a profile
whose layout cannot map onto the LoRA, text encoders of different shapes. Warnings do not block: a block whose
combined strength Σ|strength·weight| exceeds ``threshold``, the same LoRA (or the same content) twice, DoRA mixed with
plain LoRA, variants that differ, and pairs of LoRAs whose deltas in a block point in opposite directions (cosine of
ΔW below ``opposing``, computed in low rank by :mod:`.similarity`).

Effective coefficient of entry *i* in block *b*: ``c = strength · weight_i(b)`` (``strength_clip`` for text-encoder
blocks). Combined block norm: ``‖Σ cᵢ·ΔWᵢ‖ = sqrt(Σᵢⱼ cᵢcⱼ⟨ΔWᵢ, ΔWⱼ⟩)``, exact where every module pair was compared.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .apply import resolve_weights
from .errors import LorawbError
from .layouts import get_layout

DEFAULT_THRESHOLD = 2.0  # Σ|strength·weight| per block above which a warning is given
DEFAULT_OPPOSING = -0.3  # block cosine below which two LoRAs are said to fight


@dataclass
class StackEntry:
    """One row of a stack: a LoRA (chooser label or stable ID), its strengths, and optional block weights."""

    lora: str
    strength_model: float = 1.0
    strength_clip: float = 1.0
    profile: Any = None  # a profiles.Profile, or None for all-1 weights

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], db=None) -> StackEntry:
        """From JSON: ``{"lora", "strength_model"?, "strength_clip"?, "profile"?: label | {"name","layout_id"} | id,
        "weights"?: typed text}`` (``weights`` needs the LoRA's family, resolved later)."""
        if not isinstance(d, Mapping) or not d.get("lora"):
            raise LorawbError("each stack entry needs a 'lora' (a stable ID like SD1-CHR-001).")
        profile = d.get("profile")
        if profile is not None and db is not None and not hasattr(profile, "weights"):
            from .profiles import get_profile, get_profile_by_id

            if isinstance(profile, int):
                profile = get_profile_by_id(db, profile)
            elif isinstance(profile, Mapping):
                profile = get_profile(db, str(profile.get("name")), profile.get("layout_id"))
            else:
                name, _, layout = str(profile).partition(" · ")
                profile = get_profile(db, name.strip(), layout.strip() or None)
        entry = cls(str(d["lora"]), _num(d, "strength_model", 1.0), _num(d, "strength_clip", 1.0), profile)
        if d.get("weights"):
            entry.profile = ("text", str(d["weights"]))
        return entry


def _num(d: Mapping[str, Any], key: str, default: float) -> float:
    value = d.get(key, default)
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise LorawbError(f"'{key}' must be a number, not {value!r}.") from None
    if not math.isfinite(out):
        raise LorawbError(f"'{key}' must be a finite number, not {value!r}.")
    return out


@dataclass(eq=False)  # identity: reports key the per-entry analyses
class EntryReport:
    index: int  # 1-based position in the stack
    lora: str
    stable_id: str | None = None
    name: str | None = None
    path: str | None = None
    family: str | None = None
    variant: str | None = None
    layout_id: str | None = None
    full_layout_id: str | None = None
    algorithms: dict[str, int] = field(default_factory=dict)
    addnet: str | None = None
    strength_model: float = 1.0
    strength_clip: float = 1.0
    weights: dict[str, float] | None = None  # resolved over the full layout
    weights_source: str = "uniform"
    schedule: dict[str, tuple] = field(default_factory=dict)  # block → ranges of the run (profiles.schedule.Span)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # blocking

    @property
    def title(self) -> str:
        return f"#{self.index} {self.stable_id or self.lora}" + (f" ({self.name})" if self.name else "")


@dataclass
class CombinedBlock:
    id: str
    label: str
    group: str
    contributions: list[float]  # |cᵢ|·‖ΔWᵢ(b)‖ per entry (0 where the entry does not touch the block)
    coefficients: list[float]  # cᵢ = strength·weight per entry
    strength_sum: float  # Σ|cᵢ| over the entries that touch the block
    norm: float  # ‖Σ cᵢ ΔWᵢ(b)‖ (exact when ``exact``)
    exact: bool
    min_cosine: float | None = None  # the most opposed pair in this block
    weight: float = 1.0  # the stack's combined block weight (see :func:`combined_weight`)


@dataclass
class ComposeVerdict:
    ok: bool
    family: str | None
    layout_id: str | None  # the common full layout
    entries: list[EntryReport]
    reasons: list[str]
    warnings: list[str]
    blocks: list[CombinedBlock]
    cosines: list[dict[str, Any]] = field(default_factory=list)  # {"a", "b", "block", "cosine"} per compared pair

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        from .profiles.schedule import schedule_json

        for e, src in zip(d["entries"], self.entries, strict=True):
            e["title"] = src.title
            e["schedule"] = schedule_json(src.schedule)  # the piece texts ("0.5@0-40%"), as profiles store them
        return d

    def text(self) -> str:
        """The report as the node shows it."""
        lines = [("OK" if self.ok else "REFUSED") + f": {len(self.entries)} LoRA(s)"
                 + (f", family {self.family}, layout {self.layout_id}" if self.family else "")]
        lines += [f"  ✗ {r}" for r in self.reasons]
        lines += [f"  ! {w}" for w in self.warnings]
        for e in self.entries:
            lines.append(f"  {e.title}: model {e.strength_model:g}, clip {e.strength_clip:g}, weights {e.weights_source}")
            lines += [f"      {n}" for n in e.notes]
        return "\n".join(lines)


def _resolve(db, entry: StackEntry, index: int, resolve=None) -> tuple[EntryReport, Any]:
    from .refs import resolve_entry

    rep = EntryReport(index, entry.lora, strength_model=entry.strength_model, strength_clip=entry.strength_clip)
    try:
        e = resolve(entry.lora) if resolve is not None else resolve_entry(db, entry.lora)
    except LorawbError as exc:
        rep.problems.append(str(exc))
        return rep, None
    rep.stable_id, rep.name, rep.path, rep.family, rep.variant = e.stable_id, e.name, e.path, e.family, e.variant
    rep.layout_id, rep.full_layout_id, rep.algorithms, rep.addnet = (e.layout_id, e.full_layout_id, e.algorithms,
                                                                      e.addnet)
    if e.scan_state == "error":
        rep.problems.append(f"the file cannot be used: {e.error}")
    elif not e.full_layout_id:
        rep.problems.append(f"base model family '{e.family or 'unknown'}' has no block layout, so its blocks cannot "
                            "be mapped")
    return rep, e


def _weights(rep: EntryReport, entry: StackEntry, touched: set[str]) -> None:
    profile = entry.profile
    try:
        if isinstance(profile, tuple) and profile and profile[0] == "text":
            from .profiles import parse_weights

            parsed = parse_weights(profile[1], family=rep.family, layout_id=rep.layout_id, convert=False)
            profile = parsed.profile
            rep.notes.extend(parsed.notes)
        resolved = resolve_weights(profile, rep.full_layout_id, touched)
    except LorawbError as exc:
        rep.problems.append(f"block weights cannot map onto layout {rep.full_layout_id}: {exc}")
        return
    rep.weights, rep.weights_source, rep.schedule = resolved.weights, resolved.source, resolved.schedule
    rep.notes.extend(resolved.notes)


def check_stack(db, entries: Sequence[StackEntry | Mapping[str, Any]], *, model_family: str | None = None,
                has_clip: bool = True, threshold: float = DEFAULT_THRESHOLD, opposing: float = DEFAULT_OPPOSING,
                directions: bool = True, resolve=None) -> ComposeVerdict:
    """Check a stack; never raises for a bad entry (it becomes a reason). See the module docstring.

    Args:
        model_family: the family of the model the stack goes onto, when the host knows it.
        has_clip: False when no text encoder is connected (text-encoder parts are then ignored, with a warning).
        directions: compute block cosines between entries (reads the tensors, memory-mapped, in low rank).
        resolve: ``value -> library entry`` for hosts whose LoRAs are not all in the library (a file path); it
            raises a ``LorawbError`` for an unknown value. Default: :func:`~lorawb_core.refs.resolve_entry`.
    """
    items = [e if isinstance(e, StackEntry) else StackEntry.from_dict(e, db) for e in entries]
    reports: list[EntryReport] = []
    found = []
    for i, item in enumerate(items, 1):
        rep, e = _resolve(db, item, i, resolve)
        reports.append(rep)
        found.append(e)
    reasons: list[str] = []
    warnings: list[str] = []
    if not items:
        reasons.append("the stack is empty: add at least one LoRA.")
    usable = [r for r in reports if not r.problems]
    families = Counter(r.family for r in usable)
    family = model_family or (families.most_common(1)[0][0] if families else None)
    layouts = Counter(r.full_layout_id for r in usable if r.family == family)
    layout = layouts.most_common(1)[0][0] if layouts else None
    for r in usable:
        if r.family != family:
            why = "the model" if model_family else "the rest of the stack"
            r.problems.append(f"it is a {r.family} LoRA but {why} is {family}")
        elif r.full_layout_id != layout:
            r.problems.append(f"its layout {r.full_layout_id} differs from {layout} (another model size of "
                              f"{family})")
    analyses = _analyses([r for r in reports if not r.problems])
    touched_by = {id(r): {m.block for m in an.modules if m.block} for r, an in analyses.items()}
    for r, item in zip(reports, items, strict=True):
        if not r.problems:
            _weights(r, item, touched_by.get(id(r), set()))
    _text_encoders(analyses, reports)
    for r in reports:
        reasons.extend(f"{r.title}: {p}" for p in r.problems)
    ok = not reasons
    if ok:
        warnings.extend(_stack_warnings(reports, analyses, has_clip))
    blocks, cosines = _combined(reports, analyses, layout, directions and ok, threshold, opposing, warnings) \
        if ok and layout else ([], [])
    return ComposeVerdict(ok, family, layout, reports, reasons, warnings, blocks, cosines)


def _analyses(reports: list[EntryReport]) -> dict[EntryReport, Any]:
    from .inspection import broken_reason, inspect_structure, measure_blocks

    out = {}
    for r in reports:
        try:
            an = inspect_structure(r.path)
            if not an.report.problems:
                measure_blocks(an, spectra=False)
        except LorawbError as exc:
            r.problems.append(f"the file cannot be read: {exc}")
            continue
        if an.report.problems:  # indexed as usable, but the file is broken now (NaN/Inf, shapes): rescan it
            r.problems.append(broken_reason(an.report.problems))
            continue
        out[r] = an
    return out


def _text_encoders(analyses: dict[EntryReport, Any], reports: list[EntryReport]) -> None:
    """Text-encoder modules on the same weight must have the same shape in every entry."""
    seen: dict[str, tuple[tuple[int, ...], EntryReport]] = {}
    for r in reports:
        an = analyses.get(r)
        if an is None:
            continue
        for m in an.modules:
            if m.raw.component == "unet" or m.target is None:
                continue
            shape = tuple(m.adapter.target_shape)
            first = seen.setdefault(str(m.target), (shape, r))
            if first[0] != shape and first[1] is not r:
                r.problems.append(f"its text encoder does not match {first[1].title}'s: {m.target} is "
                                  f"{'×'.join(map(str, shape))}, not {'×'.join(map(str, first[0]))}")
                break


def _stack_warnings(reports: list[EntryReport], analyses: dict[EntryReport, Any], has_clip: bool) -> list[str]:
    out = []
    by_id = Counter(r.stable_id for r in reports)
    out += [f"{sid} is in the stack {n} times" for sid, n in by_id.items() if n > 1]
    by_content: dict[str, list[EntryReport]] = {}
    for r in reports:
        if r.addnet:
            by_content.setdefault(r.addnet, []).append(r)
    out += [f"{', '.join(r.title for r in group)} are the same file content"
            for group in by_content.values() if len({r.stable_id for r in group}) > 1]
    dora = [r for r in reports if any("dora" in a for a in r.algorithms)]
    if dora and len(dora) < len(reports):
        out.append(f"DoRA ({', '.join(r.title for r in dora)}) mixed with plain LoRA: DoRA re-normalises each weight "
                   "after the others were added, so the order and strengths interact")
    variants = {r.variant for r in reports if r.variant}
    if len(variants) > 1:
        out.append(f"the LoRAs were trained on different {reports[0].family} variants: {', '.join(sorted(variants))}")
    if not has_clip:
        te = [r.title for r, an in analyses.items() if r.strength_clip and any(m.raw.component != "unet"
                                                                             for m in an.modules)]
        if te:
            out.append(f"no CLIP connected: the text-encoder part of {', '.join(te)} is not applied")
    return out


def _coefficient(r: EntryReport, block_id: str, group: str) -> float:
    weight = (r.weights or {}).get(block_id, 0.0)
    return (r.strength_clip if group == "TE" else r.strength_model) * weight


def combined_weight(strengths: Sequence[float], norms: Sequence[float], weights: Sequence[float]) -> float:
    """One block's combined weight: Σ|sᵢ|·nᵢ·wᵢ / Σ|sᵢ|·nᵢ, or the mean of the wᵢ where no entry acts."""
    shares = [abs(s) * n for s, n in zip(strengths, norms, strict=True)]
    total = sum(shares)
    if total > 0:
        return sum(a * w for a, w in zip(shares, weights, strict=True)) / total
    return sum(weights) / len(weights) if weights else 1.0


def _combined(reports, analyses, layout_id, directions, threshold, opposing, warnings):
    from .similarity import pairwise_inner

    layout = get_layout(layout_id)
    ordered = [r for r in reports if r in analyses]
    norms = [{b.id: b.norm for b in (analyses[r].report.blocks or [])} for r in ordered]
    pairs = pairwise_inner([analyses[r] for r in ordered]) if directions and len(ordered) > 1 else []
    cosines: list[dict[str, Any]] = []
    blocks: list[CombinedBlock] = []
    for b in layout.blocks:
        coef = [_coefficient(r, b.id, b.group) for r in ordered]
        weight = combined_weight([r.strength_clip if b.group == "TE" else r.strength_model for r in ordered],
                                 [n.get(b.id, 0.0) for n in norms], [(r.weights or {}).get(b.id, 0.0) for r in ordered])
        norm_b = [n.get(b.id, 0.0) for n in norms]
        energy = sum((c * n) ** 2 for c, n in zip(coef, norm_b, strict=True))
        exact = True
        min_cos = None
        for p in pairs:
            inner = p.blocks.get(b.id)
            if inner is None:
                continue
            if inner.skipped:
                exact = False
            energy += 2 * coef[p.a] * coef[p.b] * inner.inner
            denom = norm_b[p.a] * norm_b[p.b]
            if inner.pairs and denom > 0:
                cos = inner.inner / denom * (1 if coef[p.a] * coef[p.b] >= 0 else -1)
                cosines.append({"a": ordered[p.a].index, "b": ordered[p.b].index, "block": b.id, "cosine": cos})
                min_cos = cos if min_cos is None else min(min_cos, cos)
                if cos < opposing and coef[p.a] and coef[p.b]:
                    warnings.append(f"{ordered[p.a].title} and {ordered[p.b].title} pull block {b.id} in opposite "
                                    f"directions (cosine {cos:.2f})")
        if len(ordered) > 1 and not directions:
            exact = False
        touching = [abs(c) for c, n in zip(coef, norm_b, strict=True) if n > 0]
        total = sum(touching)
        if total > threshold:
            warnings.append(f"block {b.id}: combined strength {total:.2f} exceeds {threshold:g}")
        blocks.append(CombinedBlock(b.id, b.label, b.group, [abs(c) * n for c, n in zip(coef, norm_b, strict=True)],
                                    coef, total, math.sqrt(max(energy, 0.0)), exact, min_cos, weight))
    return blocks, cosines
