"""What a merge reads: each input resolved (stable ID or file), its header analysed, its block weights resolved, the
stack checked, and the modules of every input grouped by the weight they patch.

Coefficient of input *i* on a module: ``cᵢ = strength · weight_i(block)`` (``strength_clip`` on text-encoder modules,
weight 1 on modules outside every block, as when applying), times the module's ``alpha/rank`` scale.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..errors import IncompatibleStack, LorawbError, UsageError
from .lowrank import RankRule

DORA_REASON = ("DoRA cannot be summed with other LoRAs: its magnitude vector re-normalises each weight's direction "
               "after the update, so the sum of DoRA deltas is not the delta of the sum; apply it separately instead")


@dataclass
class MergeInput:
    """One entry of the stack to merge: a library stable ID (or chooser label) or a file path."""

    lora: str
    strength_model: float = 1.0
    strength_clip: float | None = None  # None: same as strength_model
    weights: str | None = None  # block weights as typed text (any dialect the nodes accept)
    profile: Any = None  # a profiles.Profile (takes precedence over ``weights``)

    @classmethod
    def parse(cls, spec: str) -> MergeInput:
        """``ID_OR_PATH[:STRENGTH][@WEIGHTS]`` as the CLI takes it (a path's own ':' before a slash is kept)."""
        head, _, weights = spec.partition("@")
        lora, strength = head, None
        cut = head.rfind(":")
        if cut > 0 and "/" not in head[cut:] and "\\" not in head[cut:]:
            lora, strength = head[:cut], head[cut + 1:]
        try:
            value = float(strength) if strength else 1.0
        except ValueError:
            raise UsageError(f"{spec!r}: the strength after ':' must be a number (e.g. SD1-CHR-001:0.8).") from None
        return cls(lora, value, None, weights or None)


@dataclass
class Source:
    """A resolved input: its file, library identity, header analysis and per-block weights."""

    index: int
    item: MergeInput
    path: str
    stable_id: str | None
    name: str
    analysis: Any
    sha256: str | None = None
    weights: dict[str, float] = field(default_factory=dict)
    weights_source: str = "uniform"
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"#{self.index} {self.stable_id or self.name}"

    @property
    def strength_clip(self) -> float:
        c = self.item.strength_clip
        return self.item.strength_model if c is None else c

    def coefficient(self, module) -> float:
        """strength × block weight for one ``inspect._Module``."""
        strength = self.item.strength_model if module.raw.component == "unet" else self.strength_clip
        weight = self.weights.get(module.block, 0.0) if module.block else 1.0
        return strength * weight


@dataclass
class ModuleGroup:
    """Every input's module on one target weight (a row slice of a fused weight is its own target)."""

    target: str
    key: str  # output module key (kohya)
    block: str | None
    component: str
    shape: tuple[int, ...]  # the weight's shape
    parts: list[tuple[Source, Any]] = field(default_factory=list)  # (source, inspect._Module)

    @property
    def matrix(self) -> tuple[int, int]:
        return self.shape[0], math.prod(self.shape[1:])

    @property
    def conv(self) -> bool:
        return len(self.shape) == 4 and self.shape[2] * self.shape[3] > 1

    @property
    def available(self) -> int:
        """Rank of the exact sum's factorisation, known from the header (dense parts: full rank)."""
        m, n = self.matrix
        ranks = sum(mod.adapter.rank or min(m, n) if mod.adapter.name in ("lora", "locon") and
                    not mod.adapter.decomposed else min(m, n) for _, mod in self.parts)
        return min(ranks, m, n)


def _resolve(db, item: MergeInput, index: int) -> tuple[str, str | None, str, str | None]:
    """(path, stable_id, display name, sha256) of one input."""
    from ..library.stable_ids import parse_id

    value = str(item.lora or "").strip()
    if not value:
        raise UsageError(f"input #{index} is empty: give a stable ID (like SDX-CHR-012) or a .safetensors path.")
    if os.path.exists(value) or parse_id(value.split(" ", 1)[0]) is None:
        if not os.path.isfile(value):
            raise UsageError(f"input #{index}: {value!r} is neither a file nor a stable ID; give a LoRA's stable ID "
                             "(lorawb search) or the path of its .safetensors file.")
        path = os.path.abspath(value)
        sid = sha = None
        if db is not None:
            row = db.execute("SELECT stable_id, sha256 FROM loras WHERE path = ? AND missing = 0", [path]).fetchone()
            sid, sha = (row[0], row[1]) if row else (None, None)
        return path, sid, os.path.splitext(os.path.basename(path))[0], sha
    if db is None:
        raise UsageError(f"input #{index}: {value!r} is a stable ID but no library is open; give the file path.")
    from ..refs import resolve_entry

    e = resolve_entry(db, value)
    return e.path, e.stable_id, e.name or e.file_name or e.stable_id, e.sha256


def _block_weights(src: Source, db) -> None:
    from ..apply import resolve_weights

    rep = src.analysis.report
    profile = src.item.profile
    touched = {m.block for m in src.analysis.modules if m.block}
    try:
        if profile is None and src.item.weights:
            from ..profiles import list_profiles, parse_weights

            known = (lambda: list_profiles(db, builtins=False)) if db is not None else None
            parsed = parse_weights(src.item.weights, family=rep.family.family, layout_id=rep.layout_id, known=known,
                                   convert=False)
            profile = parsed.profile
            src.notes.extend(parsed.notes)
        resolved = resolve_weights(profile, rep.full_layout_id, touched)
    except LorawbError as exc:
        raise IncompatibleStack(f"{src.title}: its block weights cannot map onto layout {rep.full_layout_id}: "
                                f"{exc}") from None
    src.weights, src.weights_source = resolved.weights, resolved.source
    src.notes.extend(resolved.notes)


def load_sources(db, items: list[MergeInput], *, base: bool = False) -> list[Source]:
    """Resolve and analyse every input (headers only) and apply the compose gate; raise with every reason."""
    from ..inspection import inspect_structure

    if not items:
        raise UsageError("nothing to merge: give at least one LoRA (a stable ID or a file).")
    sources = []
    for i, item in enumerate(items, 1):
        for name in ("strength_model", "strength_clip"):
            v = getattr(item, name)
            if v is not None and not math.isfinite(float(v)):
                raise UsageError(f"input #{i}: {name} must be a finite number, not {v!r}.")
        path, sid, name, sha = _resolve(db, item, i)
        sources.append(Source(i, item, path, sid, name, inspect_structure(path), sha))
    _gate(db, sources, base)
    for s in sources:
        _block_weights(s, db)
    return sources


def _gate(db, sources: list[Source], base: bool = False) -> None:
    reasons = []
    if base and (len(sources) > 1 or not any(m.adapter.decomposed for m in sources[0].analysis.modules)):
        reasons.append("a base model is only used to bake a single DoRA file into a plain LoRA; leave --base out "
                       "(plain LoRAs merge without it)")
    for s in sources:
        rep = s.analysis.report
        if not s.analysis.modules:
            reasons.append(f"{s.title}: no LoRA modules found in {s.path}")
        if rep.problems:
            reasons.append(f"{s.title}: the file cannot be used: {'; '.join(rep.problems[:3])}")
        if not rep.full_layout_id:
            reasons.append(f"{s.title}: base model family '{rep.family.family or 'unknown'}' has no block layout, "
                           "so its blocks cannot be mapped")
        dora = any(m.adapter.decomposed for m in s.analysis.modules)
        if dora and len(sources) > 1:
            reasons.append(f"{s.title}: {DORA_REASON}")
        elif dora and not base:
            reasons.append(f"{s.title}: it is a DoRA LoRA; baking DoRA into a plain LoRA needs the base model's "
                           "weights: give the model it was trained on with --base MODEL.safetensors (and a --rank)")
        other = sorted({m.adapter.name for m in s.analysis.modules if m.adapter.requires_base and
                        not m.adapter.decomposed})
        if other:
            reasons.append(f"{s.title}: {', '.join(other)} modules change the weight through the base weight and "
                           "cannot be added to other deltas")
    families = Counter(s.analysis.report.family.family for s in sources)
    family = families.most_common(1)[0][0]
    layouts = Counter(s.analysis.report.full_layout_id for s in sources
                      if s.analysis.report.family.family == family)
    layout = layouts.most_common(1)[0][0]
    for s in sources:
        rep = s.analysis.report
        if rep.family.family != family:
            reasons.append(f"{s.title}: it is a {rep.family.family} LoRA but the rest of the stack is {family}")
        elif rep.full_layout_id != layout:
            reasons.append(f"{s.title}: its layout {rep.full_layout_id} differs from {layout} (another model size "
                           f"of {family})")
    if not reasons and db is not None and all(s.stable_id for s in sources):
        from ..compose import check_stack

        verdict = check_stack(db, [{"lora": s.stable_id} for s in sources], directions=False)
        reasons.extend(verdict.reasons)
    if reasons:
        raise IncompatibleStack("these LoRAs cannot be merged:\n  " + "\n  ".join(dict.fromkeys(reasons)))


_TE_PREFIX = {"clip_l": "lora_te1_", "clip_g": "lora_te2_", "clip_h": "lora_te_", "t5xxl": "lora_te3_"}


def output_key(target: str, family: str, component_keys: set[str]) -> str:
    """The kohya module key ComfyUI and A1111 map onto ``target`` (ComfyUI's key, without ``.weight``)."""
    if len(component_keys) == 1:
        (only,) = component_keys
        if only.startswith(("lora_unet_", "lora_te")):
            return only
    comp, _, rest = target.partition(".")
    if comp == "diffusion_model" and "[" not in target:
        return "lora_unet_" + rest.replace(".", "_")
    if comp in _TE_PREFIX and rest.startswith("transformer."):
        prefix = _TE_PREFIX[comp]
        if family in ("sd15", "sd2") or (family == "sdxl_refiner" and comp == "clip_g"):
            prefix = "lora_te_"
        elif family == "flux" and comp == "t5xxl":
            prefix = "lora_te2_"
        return prefix + rest[len("transformer."):].replace(".", "_")
    return sorted(component_keys)[0]  # fused-weight slices and unknown targets keep the input's own key


def _flat(shape: tuple[int, ...]) -> tuple[int, int]:
    return shape[0], math.prod(shape[1:])


def group_modules(sources: list[Source]) -> list[ModuleGroup]:
    """Modules of every input by target; refuse targets whose shapes differ or that one input slices."""
    groups: dict[str, ModuleGroup] = {}
    whole: dict[str, str] = {}
    problems = []
    for s in sources:
        for m in s.analysis.modules:
            a = m.adapter
            target = str(m.target) if m.target is not None else a.module
            g = groups.get(target)
            shape = tuple(a.target_shape)
            if g is None:
                g = groups[target] = ModuleGroup(target, "", m.block, m.raw.component, shape)
            elif _flat(g.shape) != _flat(shape):
                problems.append(f"module {target}: {s.title} has shape {'×'.join(map(str, shape))} but "
                                f"{g.parts[0][0].title} has {'×'.join(map(str, g.shape))}")
                continue
            if len(shape) > len(g.shape):  # a flattened conv (LoHa, LoKr) next to one that keeps the kernel
                g.shape = shape
            g.parts.append((s, m))
            base = target.split("[", 1)[0]
            kind = "slice" if "[" in target else "whole"
            if whole.setdefault(base, kind) != kind:
                problems.append(f"{base}: one input patches it whole and another a row slice of it; merge LoRAs "
                                "saved in the same format")
    if problems:
        raise IncompatibleStack("these LoRAs cannot be merged:\n  " + "\n  ".join(dict.fromkeys(problems[:20])))
    family = sources[0].analysis.report.family.family
    for g in groups.values():
        g.key = output_key(g.target, family, {m.adapter.module for _, m in g.parts})
    _restore_kernels(groups.values(), family, sources[0].analysis.report.family.variant)
    keys = Counter(g.key for g in groups.values())
    clash = [k for k, n in keys.items() if n > 1]
    if clash:
        raise IncompatibleStack(f"several targets would be written as module {clash[0]}; merge LoRAs saved in one "
                                "format")
    return sorted(groups.values(), key=lambda g: g.key)


def _conv_shapes(family: str, variant: str | None) -> dict[str, tuple[int, ...]]:
    """Canonical target → weight shape of the family's k×k convolutions (empty for families without any)."""
    from ..key_targets import canonical_target, parse_module_key
    from ..samples import module_shapes

    for v in dict.fromkeys((variant, None)):
        try:
            known = module_shapes(family, "kohya", conv=True, te=False, variant=v)
        except LorawbError:
            continue
        return {str(canonical_target(parse_module_key(key), family, s.out_features, s.in_features)): s.weight_shape
                for key, s in known.items() if s.is_conv and s.kernel != (1, 1)}
    return {}


def _restore_kernels(groups, family: str, variant: str | None) -> None:
    """A k×k convolution that reached the merge flattened (LoHa/LoKr store ``(rank, in·k·k)`` factors) gets its
    kernel back from the family's module shapes, so the file holds a 4-D ``lora_down`` as kohya LoCon writes it."""
    flat = [g for g in groups if len(g.shape) == 2]
    shapes = _conv_shapes(family, variant) if flat else {}
    for g in flat:
        shape = shapes.get(g.target)
        if shape is not None and (shape[0], math.prod(shape[1:])) == g.shape:
            g.shape = shape


def check_rank(rule: RankRule, groups: list[ModuleGroup]) -> None:
    """A fixed target rank above what every module holds truncates nothing: say so."""
    if rule.dynamic or rule.concat:
        return
    best = max((g.available for g in groups if not g.conv), default=0)
    if rule.rank and best and rule.rank > best:
        raise UsageError(f"rank {rule.rank} is above what the inputs hold (at most {best} per module, the sum of "
                         "their ranks): nothing would be truncated; use concat mode (--concat) for the exact sum.")
