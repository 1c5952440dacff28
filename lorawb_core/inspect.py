"""inspect_file: read a LoRA, tell what it is, and measure every block through the layout registry."""

from __future__ import annotations

import math
import os
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .adapters import Adapter, effective_rank, probe_module
from .adapters.base import singular_values_batch
from .adapters.grams import SMALL_RANK, Factor, gram_products
from .errors import BrokenLora, InvalidTensor
from .families import FamilyGuess, ModuleShape, detect_family, from_shapes
from .hashes import Hashes, hash_file
from .keys import group_keys
from .layouts import FamilyMap, family_map
from .metadata import LoraMetadata, parse_metadata
from .naming import RawPath, Target, canonical_target, normalise_native_dit, parse_module_key
from .reader import FileStructure, open_tensors, read_scalars, read_structure

SCHEMA_VERSION = 1
NO_MODULES = "no LoRA modules found"


@dataclass
class ModuleReport:
    key: str  # module key as written in the file
    target: str  # canonical ComfyUI key (with [start:end] when it is a row slice of a fused weight)
    component: str  # unet | te | te1 | te2 | te3
    block: str | None  # block id in the family's full layout; None = unmapped
    algorithm: str
    rank: int | None
    alpha: float | None
    scale: float
    shape: list[int]  # shape of the weight it patches
    tensor_keys: list[str]
    norm: float | None = None  # ‖scale·ΔW‖_F (or the adapter-only figure when exact is False)
    exact: bool = True
    figure: str = "‖scale·ΔW‖_F"
    effective_rank: float | None = None
    nonfinite: bool = False
    problems: list[str] = field(default_factory=list)


@dataclass
class BlockStrength:
    id: str
    label: str
    group: str
    norm: float  # root of the summed squared module norms
    share: float  # share of the LoRA's total energy (0..1)
    module_count: int
    max_module: str | None = None
    max_norm: float = 0.0
    exact: bool = True  # False when a module's figure is adapter-only (DoRA, OFT, …)


@dataclass
class LoraReport:
    path: str
    file_name: str
    size: int
    mtime_ns: int
    header_bytes: int  # where tensor data starts (the addnet hash covers the rest)
    format: str
    formats: dict[str, int]
    family: FamilyGuess
    layout_id: str | None
    full_layout_id: str | None
    algorithms: dict[str, int]
    rank: int | None
    ranks: list[int]
    alpha: float | None
    modules: list[ModuleReport]
    unmapped: list[str]
    unknown_keys: list[str]
    metadata: LoraMetadata
    needs_base: bool
    blocks: list[BlockStrength] | None = None
    total_norm: float | None = None
    unmapped_norm: float | None = None
    hashes: Hashes | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def trigger_words(self) -> list[str]:
        return [t.word for t in self.metadata.trigger_words]

    @property
    def module_count(self) -> int:
        return len(self.modules)

    def to_dict(self, *, modules: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema": SCHEMA_VERSION, "path": self.path, "file_name": self.file_name, "size": self.size,
            "format": self.format, "formats": self.formats, "family": self.family.to_dict(),
            "layout": self.layout_id, "full_layout": self.full_layout_id, "algorithms": self.algorithms,
            "rank": self.rank, "ranks": self.ranks, "alpha": self.alpha, "needs_base": self.needs_base,
            "module_count": len(self.modules), "unmapped": self.unmapped, "unknown_keys": self.unknown_keys,
            "trigger_words": self.trigger_words, "metadata": self.metadata.to_dict(),
            "blocks": [asdict(b) for b in self.blocks] if self.blocks is not None else None,
            "blocks_state": "ready" if self.blocks is not None else "pending",
            "total_norm": self.total_norm, "unmapped_norm": self.unmapped_norm,
            "hashes": self.hashes.to_dict() if self.hashes else None, "problems": self.problems,
        }
        if modules:
            d["modules"] = [asdict(m) for m in self.modules]
        return d


# ---- format (naming convention) ------------------------------------------------------------------------------
_FORMAT_RULES: list[tuple[str, Callable[[str, Adapter], bool]]] = [
    ("wan-fun", lambda k, a: k.startswith("lora_unet__")),
    ("onetrainer", lambda k, a: k.startswith("lora_transformer_")),
    ("simpletuner-lycoris", lambda k, a: k.startswith("lycoris_")),
    ("xlabs", lambda k, a: ".processor." in k and re.search(r"(qkv|proj)_lora\d?$", k) is not None),
    ("diffusers-legacy", lambda k, a: any(t.key.endswith(("_lora.up.weight", ".lora.up.weight", "lora_linear_layer.up.weight"))
                                          for t in a.params.values())),
    ("kohya-lycoris", lambda k, a: k.startswith(("lora_unet_", "lora_te")) and a.name not in ("lora", "locon")),
    ("kohya", lambda k, a: k.startswith(("lora_unet_", "lora_te", "oft_unet_"))),
    ("comfyui", lambda k, a: k.startswith(("diffusion_model.", "model.diffusion_model.", "clip_l.", "clip_g.",
                                           "t5xxl.", "text_encoders."))),
    ("peft-raw", lambda k, a: k.startswith("base_model.model.")),
    ("diffusers-peft", lambda k, a: k.startswith(("transformer.", "unet.", "text_encoder"))),
    ("bare", lambda k, a: True),
]


def _format_of(key: str, adapter: Adapter) -> str:
    for name, rule in _FORMAT_RULES:
        if rule(key, adapter):
            return name
    return "bare"


# ---- the pipeline --------------------------------------------------------------------------------------------
@dataclass
class _Module:
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
class _IndexAnalysis:
    """What depends only on the tensor index (keys, shapes, dtypes): computed once per distinct index."""

    templates: list[tuple[Adapter, RawPath]]
    unknown: list[str]
    shapes: list[ModuleShape]
    shape_guess: FamilyGuess | None
    formats: Counter[str]
    mapped: dict[tuple[str, int | None], list[tuple[Target, str | None]]] = field(default_factory=dict)
    facts: _IndexFacts | None = None  # what summarize_structure takes from the index (built on first use)
    alpha_keys: list[str] | None = None  # keys of the alpha scalars, module order
    report_parts: dict[tuple[str, int | None], list[tuple]] = field(default_factory=dict)
    gram_plan: _GramPlan | None = None
    layouts: dict[tuple[str, int | None], tuple[str | None, str | None]] = field(default_factory=dict)


_ANALYSES: OrderedDict[bytes, _IndexAnalysis] = OrderedDict()
_ANALYSES_SIZE = 128
_ANALYSES_MODULES = 100_000  # and at most this many modules in all (memory bounded whatever the library holds)
_analyses_lock = threading.Lock()


def _analyse_index(structure: FileStructure) -> _IndexAnalysis:
    with _analyses_lock:
        cached = _ANALYSES.get(structure.index_digest) if structure.index_digest else None
        if cached is not None:
            _ANALYSES.move_to_end(structure.index_digest)
            return cached
    grouping = group_keys(structure.tensors)
    unknown = list(grouping.unknown_keys)
    templates: list[tuple[Adapter, RawPath]] = []
    for key, raw_module in grouping.modules.items():
        adapter, leftover = probe_module(key, raw_module.params)
        unknown.extend(leftover)
        if adapter is None:
            continue
        raw = parse_module_key(key)
        if raw.component == "unet":
            raw = RawPath(raw.component, normalise_native_dit(raw.path), raw.convention)
        templates.append((adapter, raw))
    shapes = [ModuleShape(raw, *_shape_for_detection(a)) for a, raw in templates]
    analysis = _IndexAnalysis(templates=templates, unknown=sorted(set(unknown)), shapes=shapes,
                              shape_guess=from_shapes(shapes),
                              formats=Counter(_format_of(a.module, a) for a, _ in templates))
    if structure.index_digest:
        with _analyses_lock:
            _ANALYSES[structure.index_digest] = analysis
            total = sum(len(a.templates) for a in _ANALYSES.values())
            while len(_ANALYSES) > _ANALYSES_SIZE or (total > _ANALYSES_MODULES and len(_ANALYSES) > 1):
                total -= len(_ANALYSES.popitem(last=False)[1].templates)
    return analysis


def _clone(template: Adapter) -> Adapter:
    """``copy.copy(template)`` with its own problems list (what copy.copy does for these plain dataclasses,
    without the generic reduce protocol)."""
    a = object.__new__(type(template))
    a.__dict__.update(template.__dict__)
    a.problems = list(template.problems)
    return a


def _build_modules(structure: FileStructure, index: _IndexAnalysis, meta: LoraMetadata) -> tuple[list[_Module], list[str]]:
    problems: list[str] = []
    mods = [_Module(_clone(template), raw) for template, raw in index.templates]
    if index.alpha_keys is None:
        index.alpha_keys = [a.params["alpha"].key for a, _ in index.templates if "alpha" in a.params]
    values = read_scalars(structure, index.alpha_keys)
    for m in mods:
        a = m.adapter
        if "alpha" in a.params:
            a.alpha = values[a.params["alpha"].key]
            if not math.isfinite(a.alpha):
                a.problems.append(f"alpha is {a.alpha}")
        elif meta.peft_config:
            a.alpha_override, a.rs_lora = _peft_alpha(meta.peft_config, a.module)
        if a.problems:
            problems.append(f"{a.module}: {'; '.join(a.problems)}")
    return mods, problems


def _shape_for_detection(a: Adapter) -> tuple[int, int]:
    s = a.target_shape
    return (s[0] if s else 0, s[1] if len(s) > 1 else 0)


def _mapped(index: _IndexAnalysis, family: FamilyGuess) -> tuple[FamilyMap | None, list[tuple[Target, str | None]]]:
    """Canonical target and block of every module of the index for one family (cached on the index)."""
    fm = family_map(family.family, family.depth)
    key = (family.family, family.depth)
    mapped = index.mapped.get(key)
    if mapped is None:
        mapped = []
        for adapter, raw in index.templates:
            out_rows, in_cols = _shape_for_detection(adapter)
            target = canonical_target(raw, family.family, out_rows, in_cols)
            mapped.append((target, fm.block_of(target.key) if fm else None))
        index.mapped[key] = mapped
    return fm, mapped


def _map_blocks(mods: list[_Module], index: _IndexAnalysis, family: FamilyGuess) -> FamilyMap | None:
    fm, mapped = _mapped(index, family)
    for m, (target, block) in zip(mods, mapped, strict=True):
        m.target, m.block = target, block
    return fm


@dataclass
class Analysis:
    """A report plus what measuring needs: the parsed header and the module adapters."""

    report: LoraReport
    modules: list[_Module]
    structure: FileStructure
    index: _IndexAnalysis | None = field(default=None, repr=False, compare=False)


def _report_parts(index: _IndexAnalysis, family: FamilyGuess, mods: list[_Module]) -> list[tuple]:
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
    """Everything the header tells (no tensor data read): family, format, layout, modules, metadata."""
    structure = read_structure(path)
    meta = parse_metadata(structure.metadata)
    index = _analyse_index(structure)
    mods, problems = _build_modules(structure, index, meta)
    unknown = index.unknown
    family = detect_family(index.shapes, structure.metadata, shape_guess=index.shape_guess)
    fm = _map_blocks(mods, index, family)
    touched = {m.block for m in mods if m.block}
    layout = fm.choose(touched) if fm else None
    formats = index.formats
    facts = _index_facts(index)  # algorithms, ranks, needs_base: the same over the templates as over their copies
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
    if not mods:
        problems.append(f"{NO_MODULES}: every key is unknown" if unknown else f"{NO_MODULES}: the file holds no tensors")
    report = LoraReport(
        path=os.fsdecode(structure.path), file_name=structure.path.name, size=structure.size,
        mtime_ns=structure.mtime_ns, header_bytes=structure.header_bytes, format=formats.most_common(1)[0][0] if formats else "unknown",
        formats=dict(formats.most_common()), family=family, layout_id=layout.id if layout else None,
        full_layout_id=fm.full.id if fm else None, algorithms=dict(facts.algorithms),
        rank=facts.rank, ranks=list(facts.ranks),
        alpha=alphas.most_common(1)[0][0] if alphas else None, modules=reports,
        unmapped=sorted(m.adapter.module for m in mods if m.block is None), unknown_keys=list(unknown),
        metadata=meta, needs_base=facts.needs_base, problems=problems,
    )
    return Analysis(report, mods, structure, index)


# ---- the library's structure phase ----------------------------------------------------------------------------
@dataclass
class StructureSummary:
    """What the library's structure phase writes (``library.work.structure_fields``), from the header alone.

    The same figures as :func:`inspect_structure`'s report (``module_count`` = ``len(report.modules)``), except
    ``alpha``: the alpha scalars lie between the tensors, one read each, so they are not read here (``alpha`` is
    None, and problems of alpha values are not listed); the library takes both from phase (b), which reads the
    tensors anyway. Everything that depends only on the tensor index is computed once per distinct index.
    """

    path: str
    size: int
    mtime_ns: int
    header_bytes: int
    format: str
    family: FamilyGuess
    layout_id: str | None
    full_layout_id: str | None
    algorithms: dict[str, int]
    rank: int | None
    module_count: int
    metadata: LoraMetadata
    needs_base: bool
    problems: list[str]
    alpha: float | None = None

    @property
    def trigger_words(self) -> list[str]:
        return [t.word for t in self.metadata.trigger_words]


@dataclass(frozen=True)
class _IndexFacts:
    format: str
    algorithms: dict[str, int]
    rank: int | None
    ranks: tuple[int, ...]
    module_count: int
    needs_base: bool
    problems: tuple[str, ...]  # shape problems of the modules and "no LoRA modules" (no alpha problems)


def _index_facts(index: _IndexAnalysis) -> _IndexFacts:
    if index.facts is None:  # the same expressions as inspect_structure, over the templates
        adapters = [a for a, _ in index.templates]
        ranks = Counter(a.rank for a in adapters if a.rank)
        problems = [f"{a.module}: {'; '.join(a.problems)}" for a in adapters if a.problems]
        if not adapters:
            problems.append(f"{NO_MODULES}: every key is unknown" if index.unknown
                            else f"{NO_MODULES}: the file holds no tensors")
        index.facts = _IndexFacts(
            format=index.formats.most_common(1)[0][0] if index.formats else "unknown",
            algorithms=dict(Counter(a.algorithm for a in adapters).most_common()),
            rank=ranks.most_common(1)[0][0] if ranks else None, ranks=tuple(sorted(ranks)), module_count=len(adapters),
            needs_base=any(a.requires_base for a in adapters), problems=tuple(problems))
    return index.facts


def _layout_ids(index: _IndexAnalysis, family: FamilyGuess) -> tuple[str | None, str | None]:
    key = (family.family, family.depth)
    ids = index.layouts.get(key)
    if ids is None:
        fm, mapped = _mapped(index, family)
        layout = fm.choose({block for _, block in mapped if block}) if fm else None
        ids = index.layouts[key] = (layout.id if layout else None, fm.full.id if fm else None)
    return ids


def summarize_structure(path: str | os.PathLike[str]) -> StructureSummary:
    """The header facts the library's structure phase needs, without per-module work once the index is known:
    per file only the header read, the metadata and the family's metadata evidence (see StructureSummary)."""
    structure = read_structure(path)
    meta = parse_metadata(structure.metadata)
    index = _analyse_index(structure)
    family = detect_family(index.shapes, structure.metadata, shape_guess=index.shape_guess)
    facts = _index_facts(index)
    layout_id, full_layout_id = _layout_ids(index, family)
    return StructureSummary(
        path=os.fsdecode(structure.path), size=structure.size, mtime_ns=structure.mtime_ns,
        header_bytes=structure.header_bytes, format=facts.format, family=family, layout_id=layout_id,
        full_layout_id=full_layout_id, algorithms=dict(facts.algorithms), rank=facts.rank,
        module_count=facts.module_count, metadata=meta, needs_base=facts.needs_base, problems=list(facts.problems))


@dataclass
class _GramPlan:
    """Index facts for the batched Grams: the data region split into its tensors (file order), and for each
    module of a kind the batched Grams can measure (``batchable`` decides per file) its (up, down) factors as
    (key, piece, start, end, dtype, rows, cols)."""

    sizes: list[int]
    factors: list[tuple | None]


def _gram_plan(structure: FileStructure, modules: list[_Module]) -> _GramPlan:
    ordered = sorted(structure.tensors.values(), key=lambda t: (t.start, t.end))
    piece = {t.key: i for i, t in enumerate(ordered)}
    sizes = [t.end - t.start for t in ordered]
    if any(t.start != (ordered[i - 1].end if i else 0) for i, t in enumerate(ordered)):
        sizes = []  # not one tiling of the data region: no split, byte views only

    def side(info):
        rows = info.shape[0]
        return (info.key, piece[info.key], info.start, info.end, info.dtype, rows,
                info.numel // rows if rows else math.prod(info.shape[1:]))

    return _GramPlan(sizes, [
        (side(m.adapter.params["up"]), side(m.adapter.params["down"]))
        if hasattr(type(m.adapter), "batchable") and "up" in m.adapter.params and "down" in m.adapter.params
        else None for m in modules])


def _batch_pairs(loader, analysis: Analysis) -> tuple[list[_Module], list[tuple[Factor, Factor]]]:
    """The modules measured by the batched Grams (``adapter.batchable``) and their factors: torch views of the
    map (one split of the whole data region, then a dtype view per factor) or, where a factor's offset does not
    suit its dtype, numpy bytes."""
    import torch

    from .reader import _TORCH_DTYPES

    mods, index, structure = analysis.modules, analysis.index, analysis.structure
    plan = index.gram_plan if index is not None else None
    if plan is None or len(plan.factors) != len(mods):
        plan = _gram_plan(structure, mods)
        if index is not None:
            index.gram_plan = plan
    base = structure.header_bytes
    pieces = None
    data = loader.mapped_bytes()
    batch, pairs, checked = [], [], set()
    for m, entry in zip(mods, plan.factors, strict=True):
        if entry is None or not getattr(m.adapter, "batchable", False):
            continue
        factors = []
        as_bytes = not plan.sizes or entry[0][6] < SMALL_RANK  # the staged path of gram_products takes bytes
        if not as_bytes and pieces is None:
            pieces = torch.split_with_sizes(loader.mapped_tensor()[base:base + sum(plan.sizes)], plan.sizes)
        for key, i, start, end, dtype, rows, cols in entry:
            if dtype not in checked:  # the error loader.get would raise, for the first such tensor
                loader.check_dtype(key)
                checked.add(dtype)
            view = None
            if not as_bytes:
                try:
                    view = pieces[i].view(getattr(torch, _TORCH_DTYPES[dtype]))
                except RuntimeError:  # offset or length not a multiple of the dtype's size
                    view = None
            factors.append(Factor(view if view is not None else data[base + start:base + end], dtype, rows, cols))
        batch.append(m)
        pairs.append((factors[0], factors[1]))
    return batch, pairs


def measure_blocks(analysis: Analysis, *, spectra: bool = True) -> None:
    """Fill module norms and per-block strengths; reads the tensors (memory-mapped).

    ``spectra`` also computes every low-rank module's effective rank (batched r×r eigenvalue problems).
    """
    report, mods = analysis.report, analysis.modules
    by_key = {r.key: r for r in report.modules}
    grams: list[tuple[ModuleReport, tuple]] = []
    with open_tensors(analysis.structure) as loader:
        def getter(a: Adapter):
            return lambda param: loader.get(a.params[param].key)

        batch, pairs = _batch_pairs(loader, analysis)
        sums, batch_grams = gram_products(pairs, keep=spectra)
        del pairs  # views of the map: released before it closes
        batched = {id(m): j for j, m in enumerate(batch)}
        for m in mods:
            a, r = m.adapter, by_key[m.adapter.module]
            get = getter(a)
            try:
                j = batched.get(id(m))
                e = a.energy(get) if j is None else \
                    a.energy_from_product(get, sums[j], batch_grams[j] if batch_grams is not None else None)
            except InvalidTensor as exc:
                r.problems.append(str(exc))
                if not a.problems:  # header problems are listed already; a dtype torch cannot use is not
                    report.problems.append(str(exc))
                continue
            if not math.isfinite(e.energy):  # any NaN/Inf in a factor propagates into the Grams
                r.nonfinite = True
                r.problems.append("NaN or Inf values in the tensors")
                continue
            r.norm = math.sqrt(max(e.energy, 0.0))
            r.exact = e.exact
            if e.grams is not None and spectra:
                grams.append((r, e.grams))
    for (r, _), sv in zip(grams, singular_values_batch([g for _, g in grams]), strict=True):
        r.effective_rank = effective_rank(sv)
    nonfinite = [r.key for r in report.modules if r.nonfinite]
    if nonfinite:
        report.problems.append(f"{len(nonfinite)} module(s) hold NaN/Inf values: {', '.join(nonfinite[:5])}"
                               + (" …" if len(nonfinite) > 5 else ""))
    report.blocks = aggregate_blocks(report)


def aggregate_blocks(report: LoraReport) -> list[BlockStrength] | None:
    from .layouts import get_layout

    if report.layout_id is None:
        report.total_norm = math.sqrt(sum((r.norm or 0.0) ** 2 for r in report.modules))
        report.unmapped_norm = report.total_norm
        return None
    layout = get_layout(report.layout_id)
    energy: dict[str, float] = {b.id: 0.0 for b in layout.blocks}
    counts: Counter[str] = Counter()
    top: dict[str, tuple[float, str]] = {}
    inexact: set[str] = set()
    unmapped_energy = 0.0
    for r in report.modules:
        if r.norm is None:
            continue
        e = r.norm ** 2
        if r.block is None or r.block not in energy:
            unmapped_energy += e
            continue
        energy[r.block] += e
        counts[r.block] += 1
        if r.norm > top.get(r.block, (-1.0, ""))[0]:
            top[r.block] = (r.norm, r.key)
        if not r.exact:
            inexact.add(r.block)
    total = sum(energy.values()) + unmapped_energy
    report.total_norm = math.sqrt(total)
    report.unmapped_norm = math.sqrt(unmapped_energy)
    return [BlockStrength(id=b.id, label=b.label, group=b.group, norm=math.sqrt(energy[b.id]),
                          share=energy[b.id] / total if total > 0 else 0.0, module_count=counts[b.id],
                          max_module=top.get(b.id, (0.0, None))[1], max_norm=top.get(b.id, (0.0, None))[0],
                          exact=b.id not in inexact)
            for b in layout.blocks]


def broken_reason(problems: list[str], shown: int = 3) -> str:
    """One sentence for a file whose ``problems`` keep it from being applied (every problem a report lists does:
    NaN/Inf values, factor shapes that do not multiply, rank-0 factors, a non-finite alpha, no LoRA modules)."""
    listed = "; ".join(problems[:shown]) + (f"; and {len(problems) - shown} more" if len(problems) > shown else "")
    if len(problems) == 1 and problems[0].startswith(NO_MODULES):
        return (f"cannot be applied: {listed}. It is not a LoRA lorawb can read (an embedding, a checkpoint or an "
                "unknown format): keep it out of the LoRA folders, or report the format if it is a LoRA.")
    return (f"cannot be applied: {listed}. The file is damaged or was saved wrongly: download or export it again "
            "(lorawb inspect --blocks lists every problem).")


def check_applicable(report: LoraReport) -> None:
    """Raise :class:`BrokenLora` (with the report) when the report lists any problem."""
    if report.problems:
        raise BrokenLora(f"{report.path}: {broken_reason(report.problems)}", report)


def inspect_file(path: str | os.PathLike[str], *, blocks: bool = True, hashes: bool = False, spectra: bool = True,
                 progress: Callable[[int, int], None] | None = None, check: bool = True) -> LoraReport:
    """Inspect one LoRA file.

    Args:
        path: a ``.safetensors`` file.
        blocks: read the tensors and measure per-module and per-block strength (else structure only).
        hashes: stream the whole file for SHA256 / AutoV2 / addnet (AutoV3) hashes.
        spectra: with ``blocks``, also the effective rank of every low-rank module.
        progress: ``(bytes_done, bytes_total)`` callback while hashing.
        check: raise :class:`BrokenLora` for a file that cannot be applied (else its problems are only listed in
            ``report.problems`` and on the modules).

    Raises:
        LorawbError subclasses for files that cannot be read at all, and :class:`BrokenLora` (``check``) for files
        that read but cannot be applied: shape mismatches, rank-0 factors and "no LoRA modules" from the header,
        NaN/Inf values with ``blocks``. ``exc.report`` holds the report.
    """
    analysis = inspect_structure(path)
    report = analysis.report
    if check:
        check_applicable(report)
    if blocks:
        measure_blocks(analysis, spectra=spectra)
        if check:
            check_applicable(report)
    if hashes:
        report.hashes = hash_file(Path(report.path), report.header_bytes, progress)
    return report
