"""GLoRA: ΔW = W·A1·A2 + B1·B2 (scaled). The W-dependent term needs the base weight.

The adapter-only figure is ‖scale·B1·B2‖, the part that does not depend on W.
"""

from __future__ import annotations

from typing import ClassVar

from .base import Adapter, Energy, Getter, flat2, lowrank_energy


class GloraAdapter(Adapter):
    name: ClassVar[str] = "glora"
    needs_base: ClassVar[bool] = True
    figure: ClassVar[str] = "‖scale·B1·B2‖ (the W·A1·A2 term needs the base weight)"

    @classmethod
    def consumed(cls) -> tuple[str, ...]:
        return ("a1", "a2", "b1", "b2", "bm")

    @classmethod
    def claims(cls, params) -> bool:
        return all(p in params for p in ("a1", "a2", "b1", "b2"))

    def inspect_shapes(self) -> None:
        b1, b2 = self.shape_of("b1"), self.shape_of("b2")
        # LyCORIS stores b1 as (out, r) and b2 as (r, in); older files the other way round.
        if b1[-1] == b2[0] or (len(b1) > 1 and b1[1] == b2[0]):
            self.rank = b2[0]
            self.target_shape = (b1[0], *b2[1:])
        else:
            self.rank = b1[0]
            self.target_shape = (b2[0], *b1[1:])

    def _pair(self, get: Getter):
        b1, b2 = flat2(get("b1")), flat2(get("b2"))
        return (b1, b2) if b1.shape[1] == b2.shape[0] else (b2, b1)

    def energy(self, get: Getter) -> Energy:
        s = self.scale()
        up, down = self._pair(get)
        e, _, _ = lowrank_energy(up, down)
        return Energy(energy=s * s * e, exact=False)

    def delta(self, get: Getter):
        raise NotImplementedError("GLoRA ΔW = W·A1·A2 + B1·B2 needs the base weight; apply it through the host.")
