"""Inner products of two LoRAs' ΔW per block, in low rank: how much their deltas agree or fight.

For two plain low-rank modules on the same weight, ⟨s₁U₁D₁, s₂U₂D₂⟩_F = s₁s₂·tr((U₁ᵀU₂)(D₂D₁ᵀ)) from r₁×r₂
products — ΔW is never built. Other algorithms (LoHa, LoKr, Tucker, full) are compared densely when the weight is
small (≤ ``DENSE_LIMIT`` elements), else skipped and counted, so a figure is never silently partial.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from .adapters import Adapter
from .adapters.base import flat2
from .errors import InvalidTensor

DENSE_LIMIT = 1 << 22  # 4M elements: 32 MB in float64 per delta


@dataclass
class BlockInner:
    """⟨ΔW_a, ΔW_b⟩ summed over the modules of one block that both LoRAs patch."""

    inner: float = 0.0
    pairs: int = 0  # module pairs compared
    skipped: int = 0  # module pairs on the same weight that could not be compared (too big to densify, bad tensors)


@dataclass
class PairInner:
    a: int
    b: int
    blocks: dict[str, BlockInner] = field(default_factory=dict)


def _lowrank(a: Adapter) -> bool:
    return a.name in ("lora", "locon") and "mid" not in a.params and not a.problems and not a.requires_base


def module_inner(a: Adapter, get_a: Callable[[str], Any], b: Adapter, get_b: Callable[[str], Any]) -> float | None:
    """⟨scale·ΔW_a, scale·ΔW_b⟩_F for two modules patching the same weight; None when it cannot be computed."""
    if tuple(a.target_shape) != tuple(b.target_shape):
        return None
    try:
        if _lowrank(a) and _lowrank(b):
            ua, da = flat2(get_a("up")).double(), flat2(get_a("down")).double()
            ub, db = flat2(get_b("up")).double(), flat2(get_b("down")).double()
            return a.scale() * b.scale() * float(((ua.T @ ub) * (da @ db.T)).sum())
        numel = 1
        for n in a.target_shape:
            numel *= int(n)
        if numel > DENSE_LIMIT:
            return None
        return float((a.delta(get_a).double() * b.delta(get_b).double()).sum())
    except (InvalidTensor, NotImplementedError, RuntimeError):
        return None


def pairwise_inner(analyses: list[Any]) -> list[PairInner]:
    """For every pair of analyses (``inspect.Analysis``), block-wise inner products of their ΔW.

    Modules are paired by their canonical target (ComfyUI weight key, incl. the row slice of a fused weight).
    """
    from .tensors import open_tensors

    out: list[PairInner] = []
    with ExitStack() as stack:
        loaders = [stack.enter_context(open_tensors(an.structure)) for an in analyses]
        by_target = [{str(m.target): m for m in an.modules if m.target is not None} for an in analyses]
        for i in range(len(analyses)):
            for j in range(i + 1, len(analyses)):
                pair = PairInner(i, j)
                for target, mi in by_target[i].items():
                    mj = by_target[j].get(target)
                    if mj is None or mi.block is None:
                        continue
                    bi = pair.blocks.setdefault(mi.block, BlockInner())
                    value = module_inner(mi.adapter, _getter(loaders[i], mi.adapter), mj.adapter,
                                         _getter(loaders[j], mj.adapter))
                    if value is None:
                        bi.skipped += 1
                    else:
                        bi.inner += value
                        bi.pairs += 1
                out.append(pair)
    return out


def _getter(loader: Any, adapter: Adapter) -> Callable[[str], Any]:
    return lambda param: loader.get(adapter.params[param].key)
