"""LoHa (Hadamard product of two low-rank pairs), incl. Tucker ``hada_t1``/``hada_t2``.

ΔW = (w1a·w1b) ⊙ (w2a·w2b). There is no cheap closed form for the norm, so ΔW is materialised in row chunks of
bounded size (``CHUNK_ELEMENTS``); Tucker modules (small conv kernels) are rebuilt whole.
"""

from __future__ import annotations

from typing import ClassVar

from .base import CHUNK_ELEMENTS, Adapter, Energy, Getter, RankFree

_FACTORS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
_PLAIN = frozenset({*_FACTORS, "alpha"})  # the params a plain module may hold


class LohaAdapter(Adapter):
    name: ClassVar[str] = "loha"

    @classmethod
    def consumed(cls) -> tuple[str, ...]:
        return (*_FACTORS, "hada_t1", "hada_t2")

    @classmethod
    def claims(cls, params) -> bool:
        return all(f in params for f in _FACTORS)

    @classmethod
    def rank_free(cls, names: tuple[str, ...], shapes: tuple[tuple[int, ...], ...]) -> RankFree | None:
        """A plain LoHa module: the four factors (maybe ``alpha``, no Tucker cores), ``w?_a`` matrices, ``w?_b`` of
        one shape, each pair multiplying, the two products of one shape, no size 0. Probing gives it this adapter
        with rank ``w1_b[0]``, target ``(w1_a[0], *w1_b[1:])`` and no problem."""
        if len(names) not in (4, 5) or not _PLAIN.issuperset(names) or not all(f in names for f in _FACTORS):
            return None
        w1a, w1b, w2a, w2b = (shapes[names.index(f)] for f in _FACTORS)
        if len(w1a) != 2 or len(w2a) != 2 or len(w1b) < 2 or len(w1b) != len(w2b) or w1a[1] != w1b[0] or \
                w2a[1] != w2b[0] or w1a[0] != w2a[0] or w1b[1:] != w2b[1:] or 0 in w1a or 0 in w1b or 0 in w2a or \
                0 in w2b:
            return None
        return RankFree(w1b[0], (w1a[0], *w1b[1:]))

    @property
    def tucker(self) -> bool:
        return "hada_t1" in self.params and "hada_t2" in self.params

    def inspect_shapes(self) -> None:
        w1a, w1b = self.shape_of("hada_w1_a"), self.shape_of("hada_w1_b")
        w2a, w2b = self.shape_of("hada_w2_a"), self.shape_of("hada_w2_b")
        self.rank = w1b[0]
        if self.tucker:  # w?_a is (r, out), w?_b is (r, in), t is (r, r, kh, kw)
            t1 = self.shape_of("hada_t1")
            self.require(w1a[0] == t1[0] and w1b[0] == t1[1], lambda: f"hada_t1 {t1} does not fit w1 {w1a}/{w1b}")
            self.target_shape = (w1a[1], w1b[1], *t1[2:])
        else:
            self.require(w1a[1] == w1b[0], lambda: f"hada_w1_a {w1a} / hada_w1_b {w1b}: rank mismatch")
            self.require(w2a[1] == w2b[0], lambda: f"hada_w2_a {w2a} / hada_w2_b {w2b}: rank mismatch")
            self.require(w1a[0] == w2a[0] and w1b[1:] == w2b[1:], "the two Hadamard factors have different shapes")
            self.target_shape = (w1a[0], *w1b[1:])

    def _tucker_factors(self, get: Getter):
        import torch

        w1 = torch.einsum("ijkl,jr,ip->prkl", get("hada_t1").double(), get("hada_w1_b").double(),
                          get("hada_w1_a").double())
        w2 = torch.einsum("ijkl,jr,ip->prkl", get("hada_t2").double(), get("hada_w2_b").double(),
                          get("hada_w2_a").double())
        return w1, w2

    def energy(self, get: Getter) -> Energy:
        self.check_valid()
        s = self.scale()
        if self.tucker:
            w1, w2 = self._tucker_factors(get)
            e = float((w1 * w2).pow(2).sum())
        else:
            a1, b1 = get("hada_w1_a").double(), get("hada_w1_b").double().reshape(self.rank, -1)
            a2 = get("hada_w2_a").double()
            b2 = get("hada_w2_b").double().reshape(self.shape_of("hada_w2_b")[0], -1)
            rows = max(1, CHUNK_ELEMENTS // max(1, b1.shape[1]))
            e = 0.0
            for start in range(0, a1.shape[0], rows):
                block = (a1[start:start + rows] @ b1) * (a2[start:start + rows] @ b2)
                e += float(block.pow(2).sum())
        return Energy(energy=s * s * e + self.bias_energy(get, s), exact=not self.requires_base)

    def delta(self, get: Getter):
        self.check_valid()
        if self.tucker:
            w1, w2 = self._tucker_factors(get)
            w = w1 * w2
        else:
            w = (get("hada_w1_a").double() @ get("hada_w1_b").double().reshape(self.rank, -1)) * (
                get("hada_w2_a").double() @ get("hada_w2_b").double().reshape(self.shape_of("hada_w2_b")[0], -1))
        return (self.scale() * w).reshape(self.target_shape)
