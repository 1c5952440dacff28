"""The header side of an inspection: modules, family, format and layout from the tensor index, computed once per
distinct index (``IndexAnalysis``, cached) and copied per file; ``inspect_structure`` (a full report) and
``summarize_structure`` (the library's structure phase) share every aggregate over the index (``index_facts``)."""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..adapters import Adapter
from ..bounded_lru import BoundedLru
from ..family_detect import FamilyGuess, ModuleShape, detect_family, from_shapes
from ..key_groups import GroupingPlan, ModulePlan, grouping_plan
from ..key_targets import RawPath, Target
from ..layouts import FamilyMap, family_map
from ..metadata import LoraMetadata, parse_metadata
from ..reader import FileStructure, TensorInfo, read_structure
from ..tensors import read_scalars
from .module_facts import ModuleFacts, module_facts
from .report import NO_MODULES, LoraReport, ModuleReport

if TYPE_CHECKING:
    from .measure import GramPlan


@dataclass
class Module:
    adapter: Adapter
    raw: RawPath
    target: Target | None = None
    block: str | None = None


def _peft_config_for(cfg: dict[str, Any] | None, module: str) -> dict[str, Any] | None:
    """The PEFT adapter config that applies to ``module``: diffusers prefixes every entry with the component
    (``transformer.lora_alpha``, ``unet.r``, ``text_encoder.lora_alpha``); older files hold one flat config."""
    if not isinstance(cfg, dict):
        return None
    component = module.split(".", 1)[0]
    prefixed = {k[len(component) + 1:]: v for k, v in cfg.items() if k.startswith(component + ".")}
    return prefixed or {k: v for k, v in cfg.items() if "." not in k} or None


def _peft_alpha(cfg: dict[str, Any] | None, module: str) -> tuple[float | None, bool]:
    cfg = _peft_config_for(cfg, module)
    if not cfg:
        return None, False
    alpha = cfg.get("lora_alpha")
    inner = module.split(".", 1)[1] if "." in module else module
    for pattern, value in (cfg.get("alpha_pattern") or {}).items():
        if re.search(rf"(^|\.){re.escape(str(pattern))}$", inner):
            alpha = value
    try:
        return (float(alpha) if alpha is not None else None), bool(cfg.get("use_rslora"))
    except (TypeError, ValueError):
        return None, False


@dataclass
class IndexAnalysis:
    """What depends only on the tensor index (keys, shapes, dtypes): computed once per distinct index."""

    plans: list[ModulePlan]  # the grouping plan of every module an adapter claims
    tensors: dict[str, TensorInfo]  # the index's tensors
    unknown: list[str]
    shapes: list[ModuleShape]
    shape_guess: FamilyGuess | None
    formats: Counter[str]
    mapped: dict[tuple[str, int | None], list[tuple[Target, str | None]]] = field(default_factory=dict)
    facts: IndexFacts | None = None  # the aggregates over the index (built on first use)
    alpha_keys: list[str] | None = None  # keys of the alpha scalars, module order
    report_parts: dict[tuple[str, int | None], list[tuple]] = field(default_factory=dict)
    gram_plan: GramPlan | None = None
    layouts: dict[tuple[str, int | None], tuple[str | None, str | None]] = field(default_factory=dict)
    module_facts: list[ModuleFacts] = field(default_factory=list)  # per module, in the order of ``plans``
    _modules: list[tuple[str, dict[str, TensorInfo]]] | None = field(default=None, repr=False)
    _templates: list[tuple[Adapter, RawPath]] | None = field(default=None, repr=False)

    @property
    def modules(self) -> list[tuple[str, dict[str, TensorInfo]]]:
        """(module key, its params) of every module an adapter claims (built on first use: the structure phase
        needs only the facts)."""
        if self._modules is None:
            t = self.tensors
            self._modules = [(mp.key, {p: t[k] for p, k in mp.params}) for mp in self.plans]
        return self._modules

    @property
    def templates(self) -> list[tuple[Adapter, RawPath]]:
        """The modules' adapters over this index's tensors (built on first use)."""
        if self._templates is None:
            self._templates = [(f.template(key, params), f.raw)
                               for (key, params), f in zip(self.modules, self.module_facts, strict=True)]
        return self._templates


# by index digest; at most 128 and 100,000 modules in all (memory bounded whatever the library holds)
_ANALYSES = BoundedLru[bytes, IndexAnalysis](entries=128, weight_limit=100_000, weight=lambda a: len(a.plans))


# by (grouping plan, every tensor's shape): an index that differs from one analysed before only in its dtypes or
# offsets (an fp16 and a bf16 save, other tensor orders in the data) takes over that analysis with its own tensors
_BY_SHAPES = BoundedLru[tuple, IndexAnalysis](entries=128, weight_limit=100_000, weight=lambda a: len(a.plans))


def analyse_index(structure: FileStructure) -> IndexAnalysis:
    cached = _ANALYSES.get(structure.index_digest) if structure.index_digest else None
    if cached is not None:
        return cached
    tensors = structure.tensors
    plan = grouping_plan(tuple(tensors))
    by_shapes = (plan, tuple([t.shape for t in tensors.values()]))
    same = _BY_SHAPES.get(by_shapes)
    if same is not None:  # (what depends on dtypes and offsets is left out: the Gram plan, the module tensors)
        analysis = replace(same, tensors=tensors, gram_plan=None, _modules=None, _templates=None)
    else:
        analysis = _BY_SHAPES.put(by_shapes, _analysis(plan, tensors))
    if structure.index_digest:
        analysis = _ANALYSES.put(structure.index_digest, analysis)  # (another thread's, if it was first)
    return analysis


def clear() -> None:
    """Forget every index analysis (by digest and by shapes)."""
    _ANALYSES.clear()
    _BY_SHAPES.clear()


def _analysis(plan: GroupingPlan, tensors: dict[str, TensorInfo]) -> IndexAnalysis:
    unknown = list(plan.unknown_keys)
    plans: list[ModulePlan] = []
    facts: list[ModuleFacts] = []
    for mp in plan.modules:
        found = module_facts(mp, tensors)
        if found.leftover:
            unknown.extend(k for p, k in mp.params if p in found.leftover)
        if found.adapter_type is None:
            continue
        plans.append(mp)
        facts.append(found)
    shapes = [f.shape for f in facts]
    return IndexAnalysis(plans=plans, tensors=tensors, unknown=sorted(set(unknown)), shapes=shapes,
                         shape_guess=from_shapes(shapes), formats=Counter(f.format for f in facts), module_facts=facts)


def _clone(template: Adapter) -> Adapter:
    """``copy.copy(template)`` with its own problems list (what copy.copy does for these plain dataclasses,
    without the generic reduce protocol)."""
    a = object.__new__(type(template))
    a.__dict__.update(template.__dict__)
    a.problems = list(template.problems)
    return a


def _build_modules(structure: FileStructure, index: IndexAnalysis, meta: LoraMetadata) -> tuple[list[Module], bool]:
    """Per-file copies of the index's adapters with their alphas (read from the file, or from the PEFT config);
    True when an alpha value is a problem (NaN/Inf)."""
    mods = [Module(_clone(template), raw) for template, raw in index.templates]
    if index.alpha_keys is None:
        index.alpha_keys = [a.params["alpha"].key for a, _ in index.templates if "alpha" in a.params]
    values = read_scalars(structure, index.alpha_keys)
    bad_alpha = False
    for m in mods:
        a = m.adapter
        if "alpha" in a.params:
            a.alpha = values[a.params["alpha"].key]
            if not math.isfinite(a.alpha):
                a.problems.append(f"alpha is {a.alpha}")
                bad_alpha = True
        elif meta.peft_config:
            a.alpha_override, a.rs_lora = _peft_alpha(meta.peft_config, a.module)
    return mods, bad_alpha


def _problems(modules: list[tuple[str, list[str] | tuple[str, ...]]], unknown: list[str]) -> list[str]:
    """A file's problems from (module key, its problems): one line per module with a problem, or why there is no
    module at all."""
    lines = [f"{key}: {'; '.join(problems)}" for key, problems in modules if problems]
    if not modules:
        lines.append(f"{NO_MODULES}: " + ("every key is unknown" if unknown else "the file holds no tensors"))
    return lines


def _mapped(index: IndexAnalysis, family: FamilyGuess) -> tuple[FamilyMap | None, list[tuple[Target, str | None]]]:
    """Canonical target and block of every module of the index for one family (cached on the index)."""
    fm = family_map(family.family, family.depth)
    key = (family.family, family.depth)
    mapped = index.mapped.get(key)
    if mapped is None:
        mapped = index.mapped[key] = [f.target(family.family, family.depth, fm) for f in index.module_facts]
    return fm, mapped


def _map_blocks(mods: list[Module], index: IndexAnalysis, family: FamilyGuess) -> None:
    _, mapped = _mapped(index, family)
    for m, (target, block) in zip(mods, mapped, strict=True):
        m.target, m.block = target, block


@dataclass
class Analysis:
    """A report plus what measuring needs: the parsed header and the module adapters."""

    report: LoraReport
    modules: list[Module]
    structure: FileStructure
    index: IndexAnalysis | None = field(default=None, repr=False, compare=False)


def _report_parts(index: IndexAnalysis, family: FamilyGuess, mods: list[Module]) -> list[tuple]:
    """The fields of each module's report that depend only on the index and the family (cached on the index)."""
    key = (family.family, family.depth)
    parts = index.report_parts.get(key)
    if parts is None:
        parts = index.report_parts[key] = [
            (m.adapter.module, str(m.target), m.raw.component, m.block, m.adapter.algorithm, m.adapter.rank,
             tuple(m.adapter.target_shape), tuple(t.key for t in m.adapter.params.values()),
             not m.adapter.requires_base, m.adapter.figure if not m.adapter.decomposed else
             "‖scale·ΔW‖_F before DoRA re-normalisation (needs the base weight)")
            for m in mods]
    return parts


def inspect_structure(path: str | os.PathLike[str]) -> Analysis:
    """Everything the header tells (no tensor data read): family, format, layout, modules, metadata.

    What depends on the index alone comes from :func:`index_facts` and :func:`layout_ids`, the same figures as
    :func:`summarize_structure`'s; per file only the alphas, their problems and the module copies are added.
    """
    structure = read_structure(path)
    meta = parse_metadata(structure.metadata)
    index = analyse_index(structure)
    mods, bad_alpha = _build_modules(structure, index, meta)
    family = detect_family(index.shapes, structure.metadata, shape_guess=index.shape_guess)
    _map_blocks(mods, index, family)
    facts = index_facts(index)
    layout_id, full_layout_id = layout_ids(index, family)
    alphas = Counter(m.adapter.alpha if m.adapter.alpha is not None else m.adapter.alpha_override for m in mods)
    alphas.pop(None, None)
    reports = [
        ModuleReport(key=key, target=target, component=component, block=block, algorithm=algorithm, rank=rank,
                     alpha=m.adapter.alpha if m.adapter.alpha is not None else m.adapter.alpha_override,
                     scale=m.adapter.scale(), shape=list(shape), tensor_keys=list(tensor_keys), exact=exact,
                     figure=figure, problems=list(m.adapter.problems))
        for m, (key, target, component, block, algorithm, rank, shape, tensor_keys, exact, figure)
        in zip(mods, _report_parts(index, family, mods), strict=True)
    ]
    report = LoraReport(
        path=os.fsdecode(structure.path), file_name=structure.path.name, size=structure.size,
        mtime_ns=structure.mtime_ns, header_bytes=structure.header_bytes, format=facts.format,
        formats=dict(index.formats.most_common()), family=family, layout_id=layout_id, full_layout_id=full_layout_id,
        algorithms=dict(facts.algorithms), rank=facts.rank, ranks=list(facts.ranks),
        alpha=alphas.most_common(1)[0][0] if alphas else None, modules=reports,
        unmapped=sorted(m.adapter.module for m in mods if m.block is None), unknown_keys=list(index.unknown),
        metadata=meta, needs_base=facts.needs_base,
        problems=(_problems([(m.adapter.module, m.adapter.problems) for m in mods], index.unknown) if bad_alpha
                  else list(facts.problems)),
    )
    return Analysis(report, mods, structure, index)


@dataclass(frozen=True)
class IndexFacts:
    format: str
    algorithms: dict[str, int]
    rank: int | None
    ranks: tuple[int, ...]
    module_count: int
    needs_base: bool
    problems: tuple[str, ...]  # shape problems of the modules and "no LoRA modules" (alphas are per file)


def index_facts(index: IndexAnalysis) -> IndexFacts:
    """The aggregates over the index's adapters, for every file of that index (a file's copies differ from the
    templates only by their alphas, which none of these figures reads)."""
    if index.facts is None:
        facts = index.module_facts
        ranks = Counter(f.rank for f in facts if f.rank)
        problems = _problems([(mp.key, f.problems) for mp, f in zip(index.plans, facts, strict=True)],
                             index.unknown)
        index.facts = IndexFacts(
            format=index.formats.most_common(1)[0][0] if index.formats else "unknown",
            algorithms=dict(Counter(f.algorithm for f in facts).most_common()),
            rank=ranks.most_common(1)[0][0] if ranks else None, ranks=tuple(sorted(ranks)), module_count=len(facts),
            needs_base=any(f.requires_base for f in facts), problems=tuple(problems))
    return index.facts


def layout_ids(index: IndexAnalysis, family: FamilyGuess) -> tuple[str | None, str | None]:
    key = (family.family, family.depth)
    ids = index.layouts.get(key)
    if ids is None:
        fm, mapped = _mapped(index, family)
        layout = fm.choose({block for _, block in mapped if block}) if fm else None
        ids = index.layouts[key] = (layout.id if layout else None, fm.full.id if fm else None)
    return ids
