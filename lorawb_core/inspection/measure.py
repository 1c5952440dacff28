"""The tensor side of an inspection: module norms through batched Gram products over the memory-mapped file, NaN/Inf
detection, and the per-block aggregation."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from ..adapters import Adapter, effective_rank
from ..adapters.base import singular_values_batch
from ..adapters.grams import SMALL_RANK, Factor, gram_products
from ..errors import InvalidTensor
from ..reader import FileStructure
from ..tensors import open_tensors
from .report import BlockStrength, LoraReport, ModuleReport
from .structure import Analysis, Module


@dataclass
class GramPlan:
    """Index facts for the batched Grams: the data region split into its tensors (file order), and for each
    module of a kind the batched Grams can measure (``batchable`` decides per file) its (up, down) factors as
    (key, piece, start, end, dtype, rows, cols)."""

    sizes: list[int]
    factors: list[tuple | None]


def _gram_plan(structure: FileStructure, modules: list[Module]) -> GramPlan:
    ordered = sorted(structure.tensors.values(), key=lambda t: (t.start, t.end))
    piece = {t.key: i for i, t in enumerate(ordered)}
    sizes = [t.end - t.start for t in ordered]
    if any(t.start != (ordered[i - 1].end if i else 0) for i, t in enumerate(ordered)):
        sizes = []  # not one tiling of the data region: no split, byte views only

    def side(info):
        rows = info.shape[0]
        return (info.key, piece[info.key], info.start, info.end, info.dtype, rows,
                info.numel // rows if rows else math.prod(info.shape[1:]))

    return GramPlan(sizes, [
        (side(m.adapter.params["up"]), side(m.adapter.params["down"]))
        if hasattr(type(m.adapter), "batchable") and "up" in m.adapter.params and "down" in m.adapter.params
        else None for m in modules])


def _batch_pairs(loader, analysis: Analysis) -> tuple[list[Module], list[tuple[Factor, Factor]]]:
    """The modules measured by the batched Grams (``adapter.batchable``) and their factors: torch views of the
    map (one split of the whole data region, then a dtype view per factor) or, where a factor's offset does not
    suit its dtype, numpy bytes."""
    import torch

    from ..tensors import _TORCH_DTYPES

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
    from ..layouts import get_layout

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
