"""What one module's tensor keys and shapes say: its adapter, rank, target shape, problems, parsed path, format
and, per family, its canonical target and block — computed once per (module key, param keys, shapes) across every
tensor index, since the modules of one family and naming repeat from file to file whatever else the files differ in
(other module subsets, ranks of other modules, dtypes, offsets, metadata).

Nothing here holds a :class:`TensorInfo`: offsets and dtypes belong to an index, so each index gets its own
adapters (:meth:`ModuleFacts.template`) built from these facts and its own tensors.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice

from ..adapters import ADAPTERS, Adapter, probe_module
from ..family_detect import ModuleShape
from ..key_groups import ModulePlan
from ..key_targets import RawPath, Target, canonical_target, normalise_native_dit, parse_module_key
from ..layouts import FamilyMap
from ..reader import TensorInfo
from .formats import format_of

Signature = tuple  # ((tensor key, ...), (shape, ...)) of one module


@dataclass(eq=False)
class ModuleFacts:
    """The header-only facts of one module; ``adapter_type`` None: no algorithm claims the module."""

    adapter_type: type[Adapter] | None
    own: tuple[str, ...]  # the params the adapter takes
    leftover: tuple[str, ...]  # the params it leaves unexplained (their keys are reported as unknown)
    rank: int | None = None
    target_shape: tuple[int, ...] = ()
    problems: tuple[str, ...] = ()
    raw: RawPath | None = None
    shape: ModuleShape | None = None  # what family detection reads
    format: str | None = None
    algorithm: str = ""  # as the report names it (``lora``, ``dora``, ``loha+dora``, …)
    requires_base: bool = False  # ΔW needs the base weight (DoRA, OFT, GLoRA, (IA)³)
    targets: dict[tuple[str, int | None], tuple[Target, str | None]] = field(default_factory=dict)  # by family

    def template(self, module: str, params: dict[str, TensorInfo]) -> Adapter:
        """This module's adapter over one index's tensors (no alpha yet: alphas are per file)."""
        assert self.adapter_type is not None
        return self.adapter_type(module=module, params={p: params[p] for p in self.own}, rank=self.rank,
                                 target_shape=self.target_shape, problems=list(self.problems))

    def target(self, family: str, depth: int | None, fm: FamilyMap | None) -> tuple[Target, str | None]:
        """The canonical target and the block of ``fm`` (the map of ``family`` at ``depth``) of this module."""
        key = (family, depth)
        found = self.targets.get(key)
        if found is None:
            assert self.raw is not None and self.shape is not None
            target = canonical_target(self.raw, family, self.shape.out_features, self.shape.in_features)
            found = self.targets[key] = (target, fm.block_of(target.key) if fm else None)
        return found


_FACTS: dict[Signature, ModuleFacts] = {}
_FACTS_SIZE = 200_000  # a few hundred bytes each; past this the older half goes (memory bounded)
_RANK_FREE: dict[tuple[tuple[str, ...], tuple[int, ...]], ModuleFacts] = {}  # rank-free modules' facts, first rank
_facts_lock = threading.Lock()


def module_facts(plan: ModulePlan, tensors: dict[str, TensorInfo]) -> ModuleFacts:
    """The facts of one module of a grouping plan over an index's ``tensors``, computed on first sight of its tensor
    keys with these shapes (the keys fix the module key and its params)."""
    shapes = tuple([tensors[k].shape for k in plan.tensor_keys])
    signature = (plan.tensor_keys, shapes)
    facts = _FACTS.get(signature)
    if facts is None:
        facts = _new_facts(plan, tensors, shapes)
        with _facts_lock:
            if len(_FACTS) >= _FACTS_SIZE:
                for old in list(islice(_FACTS, _FACTS_SIZE // 2)):
                    del _FACTS[old]
            _FACTS[signature] = facts
    return facts


def _new_facts(plan: ModulePlan, tensors: dict[str, TensorInfo], shapes: tuple[tuple[int, ...], ...]) -> ModuleFacts:
    """Probe the module, except one whose adapter calls it rank-free (``Adapter.rank_free``: most modules of most
    files) and whose keys and target shape were probed before at another rank: those facts with this rank."""
    params = {p: tensors[k] for p, k in plan.params}
    claimant = next((cls for cls in ADAPTERS if cls.claims(params)), None)
    free = claimant.rank_free(plan.names, shapes) if claimant is not None else None
    if free is None:
        return _probe(plan.key, params)
    key = (plan.tensor_keys, free.target_shape)
    base = _RANK_FREE.get(key)
    if base is None:
        base = _probe(plan.key, params)
        with _facts_lock:
            if len(_RANK_FREE) >= _FACTS_SIZE:
                _RANK_FREE.clear()
            _RANK_FREE[key] = base
        return base
    return ModuleFacts(base.adapter_type, base.own, base.leftover, free.rank, base.target_shape, base.problems,
                       base.raw, base.shape, base.format, base.algorithm, base.requires_base, base.targets)


def _probe(module: str, params: dict[str, TensorInfo]) -> ModuleFacts:
    adapter, leftover_keys = probe_module(module, params)
    unexplained = set(leftover_keys)
    leftover = tuple(p for p, info in params.items() if info.key in unexplained) if unexplained else ()
    if adapter is None:
        return ModuleFacts(None, (), leftover)
    raw = _raw_path(module)
    s = adapter.target_shape
    out_rows, in_cols = (s[0] if s else 0, s[1] if len(s) > 1 else 0)
    return ModuleFacts(adapter_type=type(adapter), own=tuple(adapter.params), leftover=leftover, rank=adapter.rank,
                       target_shape=tuple(s), problems=tuple(adapter.problems), raw=raw,
                       shape=ModuleShape(raw, out_rows, in_cols), format=format_of(module, adapter),
                       algorithm=adapter.algorithm, requires_base=adapter.requires_base,
                       targets=_targets_of(module, out_rows, in_cols))


@lru_cache(maxsize=1 << 16)
def _raw_path(module: str) -> RawPath:
    """The module key's component and path, native DiT paths normalised (per key: keys repeat across indexes)."""
    raw = parse_module_key(module)
    return RawPath(raw.component, normalise_native_dit(raw.path), raw.convention) if raw.component == "unet" else raw


_TARGETS: dict[tuple[str, int, int], dict[tuple[str, int | None], tuple[Target, str | None]]] = {}


def _targets_of(module: str, out_rows: int, in_cols: int) -> dict[tuple[str, int | None], tuple[Target, str | None]]:
    """The by-family targets map shared by every facts of one module key and target size (its rank and factor
    spelling do not move it); bounded with the facts."""
    key = (module, out_rows, in_cols)
    found = _TARGETS.get(key)
    if found is None:
        with _facts_lock:
            if len(_TARGETS) >= _FACTS_SIZE:
                _TARGETS.clear()
            found = _TARGETS.setdefault(key, {})
    return found


def clear() -> None:
    with _facts_lock:
        _FACTS.clear()
        _RANK_FREE.clear()
        _TARGETS.clear()
