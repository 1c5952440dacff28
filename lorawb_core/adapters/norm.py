"""Norm-layer diffs (LyCORIS ``w_norm``/``b_norm``): added to a LayerNorm/GroupNorm weight and bias."""

from __future__ import annotations

from typing import ClassVar

from .base import Adapter, Energy, Getter


class NormAdapter(Adapter):
    name: ClassVar[str] = "norm"

    @classmethod
    def consumed(cls) -> tuple[str, ...]:
        return ("w_norm", "b_norm")

    @classmethod
    def claims(cls, params) -> bool:
        return "w_norm" in params

    def inspect_shapes(self) -> None:
        self.target_shape = self.shape_of("w_norm")

    def scale(self) -> float:
        return 1.0

    def energy(self, get: Getter) -> Energy:
        tensors = [get(p) for p in ("w_norm", "b_norm") if p in self.params]
        return Energy(energy=sum(float(t.double().pow(2).sum()) for t in tensors))

    def delta(self, get: Getter):
        return get("w_norm").double()
