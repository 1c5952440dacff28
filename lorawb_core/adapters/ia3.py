"""(IA)³: W' = W ⊙ (1 + w) on rows (or columns when ``on_input``). ΔW = W ⊙ w needs the base weight.

The adapter-only figure is ‖w‖: how far the learned rescaling vector is from identity.
"""

from __future__ import annotations

from typing import ClassVar

from .base import Adapter, Energy, Getter


class Ia3Adapter(Adapter):
    name: ClassVar[str] = "ia3"
    needs_base: ClassVar[bool] = True
    figure: ClassVar[str] = "‖w‖ (rescaling vector; ΔW = W⊙w needs the base weight)"

    @classmethod
    def consumed(cls) -> tuple[str, ...]:
        return ("weight", "on_input")

    @classmethod
    def claims(cls, params) -> bool:
        return "weight" in params and "on_input" in params

    def inspect_shapes(self) -> None:
        self.target_shape = self.shape_of("weight")

    def scale(self) -> float:
        return 1.0

    def energy(self, get: Getter) -> Energy:
        w = get("weight")
        return Energy(energy=float(w.double().pow(2).sum()), exact=False)

    def delta(self, get: Getter):
        raise NotImplementedError("(IA)³ ΔW = W⊙w needs the base weight; apply it through the host instead.")
