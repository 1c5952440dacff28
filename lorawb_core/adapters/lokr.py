"""LoKr: ΔW = kron(W1, W2), each factor full or low rank (W2 also Tucker). ‖kron(A,B)‖ = ‖A‖·‖B‖ exactly."""

from __future__ import annotations

from typing import ClassVar

from .base import Adapter, Energy, Getter, gram_pair


class LokrAdapter(Adapter):
    name: ClassVar[str] = "lokr"

    @classmethod
    def consumed(cls) -> tuple[str, ...]:
        return ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t1", "lokr_t2")

    @classmethod
    def claims(cls, params) -> bool:
        has1 = "lokr_w1" in params or ("lokr_w1_a" in params and "lokr_w1_b" in params)
        has2 = "lokr_w2" in params or ("lokr_w2_a" in params and "lokr_w2_b" in params)
        return has1 and has2

    def inspect_shapes(self) -> None:
        p = self.params
        if "lokr_w1" in p:
            a, c = p["lokr_w1"].shape[:2]
        else:
            w1a, w1b = p["lokr_w1_a"].shape, p["lokr_w1_b"].shape
            self.require(w1a[1] == w1b[0], lambda: f"lokr_w1_a {w1a} / lokr_w1_b {w1b}: rank mismatch")
            a, c = w1a[0], w1b[1]
            self.rank = w1b[0]
        kernel: tuple[int, ...] = ()
        if "lokr_w2" in p:
            w2 = p["lokr_w2"].shape
            b, d, kernel = w2[0], w2[1], tuple(w2[2:])
        elif "lokr_t2" in p:  # w2_a (r, b), w2_b (r, d), t2 (r, r, kh, kw)
            w2a, w2b, t2 = p["lokr_w2_a"].shape, p["lokr_w2_b"].shape, p["lokr_t2"].shape
            self.require(t2[0] == w2a[0] and t2[1] == w2b[0], lambda: f"lokr_t2 {t2} does not fit w2 {w2a}/{w2b}")
            b, d, kernel = w2a[1], w2b[1], tuple(t2[2:])
            self.rank = w2b[0]
        else:
            w2a, w2b = p["lokr_w2_a"].shape, p["lokr_w2_b"].shape
            self.require(w2a[1] == w2b[0], lambda: f"lokr_w2_a {w2a} / lokr_w2_b {w2b}: rank mismatch")
            b, d = w2a[0], w2b[1]
            self.rank = w2b[0]
        self.target_shape = (a * b, c * d, *kernel)

    @property
    def full_full(self) -> bool:
        return "lokr_w1" in self.params and "lokr_w2" in self.params

    def scale(self) -> float:
        return 1.0 if self.full_full else super().scale()  # LyCORIS forces alpha = r for full/full

    def _factor(self, get: Getter, n: int):
        import torch

        if f"lokr_w{n}" in self.params:
            return get(f"lokr_w{n}").double()
        a, b = get(f"lokr_w{n}_a").double(), get(f"lokr_w{n}_b").double()
        if f"lokr_t{n}" in self.params:
            return torch.einsum("ijkl,ip,jr->prkl", get(f"lokr_t{n}").double(), a, b).contiguous()
        return a @ b.reshape(b.shape[0], -1)

    def _factor_energy(self, get: Getter, n: int) -> float:
        if f"lokr_w{n}" in self.params or f"lokr_t{n}" in self.params:
            return float(self._factor(get, n).pow(2).sum())
        gu, gd = gram_pair(get(f"lokr_w{n}_a"), get(f"lokr_w{n}_b"))
        return float((gu * gd).sum())

    def energy(self, get: Getter) -> Energy:
        self.check_valid()
        s = self.scale()
        e = self._factor_energy(get, 1) * self._factor_energy(get, 2)
        return Energy(energy=s * s * e + self.bias_energy(get, s), exact=not self.requires_base)

    def delta(self, get: Getter):
        import torch

        self.check_valid()
        w1, w2 = self._factor(get, 1), self._factor(get, 2)
        if w2.dim() == 4:
            w1 = w1.reshape(*w1.shape[:2], 1, 1)
        return (self.scale() * torch.kron(w1, w2)).reshape(self.target_shape)
