"""What a merge did, module by module and block by block: the rank kept and the exact truncation error.

The figures come from the singular values of each module's exact merged ΔW: kept energy ``Σ_{i≤k} σᵢ² / Σ σᵢ²``
and relative Frobenius error ``‖ΔW − ΔW_k‖_F / ‖ΔW‖_F = sqrt(Σ_{i>k} σᵢ² / Σ σᵢ²)``. Blocks and the total add the
squared norms of their modules.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


class _KeptEnergy:
    """Kept share and relative Frobenius error of a truncation, from ``energy`` and ``kept_energy`` (exact: the sum
    of the dropped singular values squared is ``energy - kept_energy``)."""

    energy: float
    kept_energy: float

    @property
    def kept(self) -> float:
        return self.kept_energy / self.energy if self.energy > 0 else 1.0

    @property
    def error(self) -> float:
        return math.sqrt(max(self.energy - self.kept_energy, 0.0) / self.energy) if self.energy > 0 else 0.0


@dataclass
class ModuleMerge(_KeptEnergy):
    key: str  # module key written to the output
    target: str
    block: str | None
    inputs: int  # how many inputs patch this weight
    available: int  # rank of the exact sum's factorisation
    rank: int  # rank written (0: the merged ΔW is zero and the module is left out)
    energy: float  # ‖ΣcᵢΔWᵢ‖²_F
    kept_energy: float  # of which kept
    dense: bool = False  # formed densely (LoHa, LoKr, full inputs)


@dataclass
class BlockMerge(_KeptEnergy):
    id: str
    modules: int
    energy: float
    kept_energy: float


@dataclass
class MergeReport:
    path: str
    mode: str  # the rank rule's label
    dtype: str
    family: str | None
    layout_id: str | None
    sources: list[dict[str, Any]]
    modules: list[ModuleMerge]
    stable_id: str | None = None
    hashes: dict[str, Any] | None = None
    seconds: float = 0.0
    size: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def energy(self) -> float:
        return sum(m.energy for m in self.modules)

    @property
    def kept_energy(self) -> float:
        return sum(m.kept_energy for m in self.modules)

    @property
    def kept(self) -> float:
        return self.kept_energy / self.energy if self.energy > 0 else 1.0

    @property
    def error(self) -> float:
        """Relative Frobenius error of the whole merged LoRA (all modules as one vector)."""
        e = self.energy
        return math.sqrt(max(e - self.kept_energy, 0.0) / e) if e > 0 else 0.0

    @property
    def max_module_error(self) -> float:
        return max((m.error for m in self.modules), default=0.0)

    @property
    def ranks(self) -> dict[int, int]:
        return dict(sorted(Counter(m.rank for m in self.modules if m.rank).items()))

    @property
    def blocks(self) -> list[BlockMerge]:
        by: dict[str, BlockMerge] = {}
        for m in self.modules:
            b = by.setdefault(m.block or "(unmapped)", BlockMerge(m.block or "(unmapped)", 0, 0.0, 0.0))
            b.modules += 1
            b.energy += m.energy
            b.kept_energy += m.kept_energy
        return list(by.values())

    def to_dict(self, *, modules: bool = True) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "modules"}
        d.update(energy=self.energy, kept=self.kept, error=self.error, max_module_error=self.max_module_error,
                 ranks=self.ranks, module_count=len(self.modules),
                 blocks=[{**asdict(b), "kept": b.kept, "error": b.error} for b in self.blocks])
        if modules:
            d["modules"] = [{**asdict(m), "kept": m.kept, "error": m.error} for m in self.modules]
        return d

    def text(self, *, blocks: bool = True) -> str:
        ranks = ", ".join(f"{r}×{n}" for r, n in self.ranks.items())
        lines = [f"merged {len(self.sources)} LoRA(s) into {self.path}" + (f" ({self.stable_id})" if self.stable_id
                                                                             else ""),
                 f"  {self.mode}, {self.dtype}, {len(self.modules)} modules, ranks {ranks or '-'}"
                 + (f", {self.family} layout {self.layout_id}" if self.family else "")]
        for s in self.sources:
            w = f", weights {s['weights_source']}" if s.get("weights_source", "uniform") != "uniform" else ""
            lines.append(f"  #{s['index']} {s.get('stable_id') or s['name']}: model {s['strength_model']:g}, clip "
                         f"{s['strength_clip']:g}{w}")
        lines.append(f"  kept energy {self.kept * 100:.4f}%, relative Frobenius error {self.error:.3e} (worst "
                     f"module {self.max_module_error:.3e})")
        if blocks:
            lines.append(f"  {'block':>10} {'modules':>7} {'‖ΔW‖':>10} {'kept %':>9} {'rel err':>10}")
            for b in self.blocks:
                lines.append(f"  {b.id:>10} {b.modules:>7} {math.sqrt(b.energy):10.4f} {b.kept * 100:9.4f} "
                             f"{b.error:10.3e}")
        if self.hashes:
            lines.append(f"  SHA256 {self.hashes.get('sha256')}, AutoV2 {self.hashes.get('autov2')}, addnet "
                         f"{str(self.hashes.get('addnet'))[:12]}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)
