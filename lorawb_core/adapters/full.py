"""Full / diff modules: ΔW is stored as is (``diff``, bias ``diff_b``); scale 1."""

from __future__ import annotations

from typing import ClassVar

from .base import Adapter, Energy, Getter


class FullAdapter(Adapter):
    name: ClassVar[str] = "full"

    @classmethod
    def consumed(cls) -> tuple[str, ...]:
        return ("diff", "diff_b")

    @classmethod
    def claims(cls, params) -> bool:
        return "diff" in params or ("diff_b" in params and len(params) == 1)

    def inspect_shapes(self) -> None:
        if "diff" in self.params:
            self.target_shape = self.shape_of("diff")
        else:
            self.target_shape = self.shape_of("diff_b")

    def scale(self) -> float:
        return 1.0

    def energy(self, get: Getter) -> Energy:
        e = float(get("diff").double().pow(2).sum()) if "diff" in self.params else 0.0
        return Energy(energy=e + self.bias_energy(get, 1.0), exact=not self.requires_base)

    def delta(self, get: Getter):
        return get("diff" if "diff" in self.params else "diff_b").double()
