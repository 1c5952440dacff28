"""LoRA (linear / 1×1) and LoCon (k×k convolutions, incl. Tucker ``lora_mid``): ΔW = U·D (·M)."""

from __future__ import annotations

from typing import ClassVar

from .base import Adapter, Energy, Getter, RankFree, flat2, lowrank_energy, tucker_energy

_PLAIN = frozenset({"up", "down", "alpha", "dora_scale", "magnitude"})  # the params a plain module may hold


class LoraAdapter(Adapter):
    name: ClassVar[str] = "lora"

    @classmethod
    def rank_free(cls, names: tuple[str, ...], shapes: tuple[tuple[int, ...], ...]) -> RankFree | None:
        """A plain linear module: ``up`` and ``down`` matrices that multiply, maybe ``alpha`` and a DoRA magnitude,
        no size 0. Probing gives it this adapter with rank ``down[0]``, target ``(up[0], down[1])`` and no problem;
        its algorithm (``lora`` or ``dora``) comes from the param names."""
        if "up" not in names or "down" not in names or not _PLAIN.issuperset(names):
            return None
        up, down = shapes[names.index("up")], shapes[names.index("down")]
        if len(up) != 2 or len(down) != 2 or up[1] != down[0] or not (up[0] and down[0] and down[1]):
            return None
        if any(0 in shape for name, shape in zip(names, shapes, strict=True) if name != "alpha"):
            return None  # (a zero-size magnitude is a problem)
        return RankFree(down[0], (up[0], down[1]))

    @classmethod
    def consumed(cls) -> tuple[str, ...]:
        return ("up", "down", "mid")

    @classmethod
    def claims(cls, params) -> bool:
        if "up" not in params or "down" not in params or "mid" in params:
            return False
        down = params["down"].shape
        return len(down) < 4 or (down[2] == 1 and down[3] == 1)

    def inspect_shapes(self) -> None:
        up, down = self.shape_of("up"), self.shape_of("down")
        self.require(len(up) >= 2 and len(down) >= 2, lambda: f"up {up} / down {down} must be matrices")
        if self.problems:
            return
        self.rank = down[0]
        mid = self.params.get("mid")
        inner = mid.shape[0] if mid is not None else self.rank
        self.require(up[1] == inner, lambda: f"up {up} has {up[1]} columns but rank is {inner} (down {down})")
        if mid is not None:
            self.require(len(mid.shape) == 4 and mid.shape[1] == down[0],
                         lambda: f"mid {mid.shape} does not fit down {down}")
            self.target_shape = (up[0], down[1], *mid.shape[2:])
        else:
            self.target_shape = (up[0], *down[1:])

    def energy(self, get: Getter) -> Energy:
        self.check_valid()
        s = self.scale()
        up, down = get("up"), get("down")
        mid = get("mid") if "mid" in self.params else None
        grams = None
        if mid is None:
            e, gu, gd = lowrank_energy(up, down)
            grams = (gu * (s * s), gd)
        else:
            e = tucker_energy(flat2(up), mid, flat2(down))
        e = s * s * e + self.bias_energy(get, s)
        return Energy(energy=e, grams=grams, exact=not self.requires_base)

    @property
    def batchable(self) -> bool:
        """Plain low-rank modules whose energy ``energy_from_product`` can take from a batched Gram product."""
        return "mid" not in self.params and not self.problems

    def energy_from_product(self, get: Getter, product: float, grams: tuple | None = None) -> Energy:
        """The energy from Σ (UᵀU)∘(DDᵀ) computed elsewhere (``adapters.grams``); ``grams`` for the spectrum."""
        s = self.scale()
        e = s * s * product + self.bias_energy(get, s)
        return Energy(energy=e, grams=(grams[0] * (s * s), grams[1]) if grams is not None else None,
                      exact=not self.requires_base)

    def delta(self, get: Getter):
        import torch

        self.check_valid()
        up, down = flat2(get("up")).double(), flat2(get("down")).double()
        if "mid" in self.params:
            mid = get("mid").double()
            w = torch.einsum("or,rdij,dc->ocij", up, mid, down)
        else:
            w = up @ down
        return (self.scale() * w).reshape(self.target_shape)


class LoConAdapter(LoraAdapter):
    """Same math as LoRA on k×k convolutions; Tucker files add ``lora_mid`` (r, r, kh, kw)."""

    name: ClassVar[str] = "locon"

    @classmethod
    def claims(cls, params) -> bool:
        return "up" in params and "down" in params and not LoraAdapter.claims(params)
