"""The per-module math of a merge: ΔW = Σᵢ cᵢ·Uᵢ·Dᵢ kept in low rank, its exact SVD, and the rank choice.

Stack the scaled factors ``U = [c₁U₁ … cₙUₙ]`` (m×R) and ``D = [D₁; …; Dₙ]`` (R×n), so that ``U·D = Σ cᵢUᵢDᵢ``
exactly. With orthonormal-times-small factorisations ``U = Q₁R₁`` and ``Dᵀ = Q₂R₂`` (from the R×R Grams: a Cholesky
factor where well conditioned, else the eigen-decomposition), ``U·D = Q₁·(R₁R₂ᵀ)·Q₂ᵀ``: the SVD of the small core ``R₁R₂ᵀ = A·S·Bᵀ`` gives the SVD of the
sum, ``(Q₁A)·S·(Q₂B)ᵀ``, without ever forming the m×n matrix. Keeping every
singular value is lossless (concat); keeping the k largest is the best rank-k approximation in Frobenius and
spectral norm (Eckart–Young), and its error is exactly ``sqrt(Σ_{i>k} σᵢ²)``.

Modules of other algorithms (LoHa, LoKr, full ΔW) enter as a dense m×n term of that module only; the module is then
decomposed by a dense SVD of the sum. Everything runs in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

DYNAMIC_METHODS = ("sv_ratio", "sv_fro", "sv_cumulative")


@dataclass(frozen=True)
class RankRule:
    """How many singular values a module keeps.

    ``rank=None`` and ``dynamic=None`` is concat (everything, lossless). ``rank`` alone is a fixed target rank
    (``conv_rank`` for k×k convolutions). With ``dynamic`` the rank follows the spectrum (kohya resize's methods):
    ``sv_ratio`` keeps σᵢ ≥ σ₁/param, ``sv_fro`` the fewest values whose √(Σσ²) reaches param·‖ΔW‖_F,
    ``sv_cumulative`` the fewest whose Σσ reaches param·Σσ; ``rank`` then caps it.
    """

    rank: int | None = None
    conv_rank: int | None = None
    dynamic: str | None = None
    param: float | None = None

    def __post_init__(self) -> None:
        for name in ("rank", "conv_rank"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise UsageError(f"{name} must be a whole number ≥ 1, not {v!r}.")
        if self.dynamic is not None:
            if self.dynamic not in DYNAMIC_METHODS:
                raise UsageError(f"dynamic rank method {self.dynamic!r} is unknown; use one of "
                                 f"{', '.join(DYNAMIC_METHODS)}.")
            p = self.param
            if p is None or not math.isfinite(p) or p <= 0:
                raise UsageError(f"{self.dynamic} needs a positive parameter, not {p!r}.")
            if self.dynamic != "sv_ratio" and p > 1:
                raise UsageError(f"{self.dynamic} takes a fraction in (0, 1], e.g. 0.99, not {p!r}.")
            if self.dynamic == "sv_ratio" and p < 1:
                raise UsageError(f"sv_ratio takes a ratio ≥ 1 (keep σ ≥ σ₁/ratio), e.g. 20, not {p!r}.")

    @property
    def concat(self) -> bool:
        return self.rank is None and self.conv_rank is None and self.dynamic is None

    @property
    def label(self) -> str:
        if self.concat:
            return "concat (lossless)"
        if self.dynamic:
            cap = f", at most {self.rank}" if self.rank else ""
            return f"dynamic {self.dynamic}={self.param:g}{cap}"
        conv = f", conv {self.conv_rank}" if self.conv_rank and self.conv_rank != self.rank else ""
        return f"rank {self.rank}{conv}"

    def keep(self, sv: list[float], *, conv: bool) -> int:
        """How many of the singular values ``sv`` (descending) to keep."""
        n = len(sv)
        if n == 0:
            return 0
        cap = (self.conv_rank or self.rank) if conv else self.rank
        if self.dynamic is None:
            return n if cap is None else min(cap, n)
        if sv[0] <= 0:
            return 1
        if self.dynamic == "sv_ratio":
            k = sum(1 for s in sv if s >= sv[0] / self.param)
        else:
            vals = [s * s for s in sv] if self.dynamic == "sv_fro" else list(sv)
            total = sum(vals)
            target = (self.param ** 2 if self.dynamic == "sv_fro" else self.param) * total
            acc, k = 0.0, n
            for i, v in enumerate(vals):
                acc += v
                if acc >= target * (1 - 1e-12):
                    k = i + 1
                    break
        k = max(1, k)
        return min(k, cap) if cap is not None else k


@dataclass
class Decomposed:
    """One merged module: ``up·down`` (float64, up m×k, down k×n) and the numbers of its truncation."""

    up: Any
    down: Any
    singular_values: list[float]  # every singular value of the exact sum (descending)
    kept: int
    available: int  # rank of the exact sum's factorisation (Σ rᵢ, at most min(m, n))
    dense: bool  # a dense term (LoHa, LoKr, full) made this module go through a dense SVD

    @property
    def energy(self) -> float:
        return sum(s * s for s in self.singular_values)

    @property
    def kept_energy(self) -> float:
        return sum(s * s for s in self.singular_values[:self.kept])

    @property
    def error(self) -> float:
        """Relative Frobenius error of the truncation: sqrt(Σ dropped σ² / Σ σ²) (0 for an all-zero module)."""
        total = self.energy
        return math.sqrt(max(total - self.kept_energy, 0.0) / total) if total > 0 else 0.0


def decompose(lowrank: list[tuple[Any, Any]], dense: list[Any], shape: tuple[int, int], rule: RankRule, *,
              conv: bool) -> Decomposed:
    """The merged factors of one module.

    Args:
        lowrank: ``(U, D)`` pairs, float64, U m×r (coefficient already folded in), D r×n.
        dense: m×n float64 terms (already scaled), added as they are.
        shape: (m, n) of the flattened weight.
        conv: the module is a k×k convolution (``rule.conv_rank`` applies).
    """
    import torch

    m, n = shape
    if dense:
        total = torch.zeros(m, n, dtype=torch.float64)
        for d in dense:
            total += d
        for u, d in lowrank:
            total.addmm_(u, d)
        return _dense(total, rule, conv=conv)
    lowrank = [_balanced(u, d) for u, d in lowrank]
    u = torch.cat([u for u, _ in lowrank], dim=1)
    d = torch.cat([d for _, d in lowrank], dim=0)
    available = min(u.shape[1], m, n)
    # U = Q₁R₁ and Dᵀ = Q₂R₂ from the small Grams (Cholesky where well conditioned, else the eigen-decomposition):
    # no m×R or n×R Q is ever formed; only the k kept columns are, as U·(small) and (small)·D
    b1, b2 = _gram_factor(u.T @ u), _gram_factor(d @ d.T)
    sv = [0.0] * available
    if b1 is None or b2 is None:  # an all-zero sum
        return _zero(u, m, n, sv, rule, conv=conv)
    a, s, bt = torch.linalg.svd(b1.r @ b2.r.T)
    # σ below round-off of the factors' scale (‖U‖·‖D‖·1e-12) are what cancelling terms leave: zero, not a direction
    s = s[s > (b1.scale * b2.scale) ** 0.5 * _CANCEL_TOL]
    if not len(s):  # the terms cancel
        return _zero(u, m, n, sv, rule, conv=conv)
    sv[:len(s)] = s.tolist()[:available]
    k = rule.keep(sv, conv=conv)
    j = min(k, len(s))
    root = s[:j].sqrt()
    up = u.new_zeros(m, k)
    down = u.new_zeros(k, n)
    up[:, :j] = u @ b1.inverse_r(a[:, :j] * root)  # Q₁·A·√S = U·R₁⁺·A·√S
    down[:j] = b2.inverse_r(bt[:j].T * root).T @ d  # √S·Bᵀ·Q₂ᵀ = (R₂⁺·B·√S)ᵀ·D
    return Decomposed(up, down, sv, k, available, False)


def _balanced(u, d):
    """``(u·t, d/t)`` with equal norms: the same product, so a file whose up factors are tiny and downs huge (or the
    reverse) cannot fall under the Grams' round-off cut beside a file scaled the other way."""
    nu, nd = float(u.norm()), float(d.norm())
    if nu == 0 or nd == 0:
        return u, d
    t = (nd / nu) ** 0.5
    return u * t, d / t


def _zero(like, m: int, n: int, sv: list[float], rule: RankRule, *, conv: bool) -> Decomposed:
    k = rule.keep(sv, conv=conv)
    return Decomposed(like.new_zeros(m, k), like.new_zeros(k, n), sv, k, len(sv), False)


_CANCEL_TOL = 1e-12
_GRAM_TOL = 1e-14  # eigenvalues of a Gram below this share of the largest are its round-off (σ below 1e-7·σ₁)
_CHOLESKY_COND = 1e8  # a Gram this well conditioned (1-norm) is factored by Cholesky: Q's orthogonality error ≤ 1e-8


@dataclass
class _GramFactor:
    """``X = Q·r`` with Q orthonormal, from the Gram ``XᵀX`` alone: ``r`` is ``Lᵀ`` of its Cholesky factor, or
    ``√Λ·Vᵀ`` of its eigen-decomposition without the round-off directions; ``inverse_r(M)`` is ``r⁺·M``, so that
    ``Q·M = X·inverse_r(M)``. ``scale`` is the Gram's largest diagonal entry (‖X‖₂² within a factor R)."""

    r: Any
    inverse_r: Any
    scale: float


def _gram_factor(gram) -> _GramFactor | None:
    """None for an all-zero X."""
    import torch

    if not len(gram) or not float(gram.diagonal().max()) > 0:
        return None
    scale = float(gram.diagonal().max())
    chol, info = torch.linalg.cholesky_ex(gram)
    if not int(info):
        cond = float(torch.linalg.matrix_norm(gram, 1) * torch.linalg.matrix_norm(torch.cholesky_inverse(chol), 1))
        if cond < _CHOLESKY_COND:
            upper = chol.T
            return _GramFactor(upper, lambda m: torch.linalg.solve_triangular(upper, m, upper=True), scale)
    w, v = torch.linalg.eigh(gram)  # ascending
    keep = w > float(w[-1]) * _GRAM_TOL
    w, v = w[keep], v[:, keep]
    return _GramFactor(w.sqrt()[:, None] * v.T, lambda m: (v / w.sqrt()) @ m, scale)


def _dense(total, rule: RankRule, *, conv: bool) -> Decomposed:
    """A dense module through the eigen-decomposition of its small Gram (min(m, n) wide, far cheaper than a full
    SVD of a wide matrix): left singular vectors Q and σ² from it, then ``down = Qᵀ·ΔW``, so that ``Q·Qᵀ·ΔW`` is
    exactly the best rank-k approximation (the projection onto the top-k left singular space)."""
    import torch

    m, n = total.shape
    wide = m <= n
    mat = total if wide else total.T
    evals, vecs = torch.linalg.eigh(mat @ mat.T)
    evals, vecs = evals.flip(0).clamp(min=0), vecs.flip(1)
    s = evals.sqrt()
    # σ from a Gram are exact to about sqrt(ε)·σ₁: below that a direction is round-off, not part of ΔW
    available = int((s > s[0] * 1e-7).sum()) if len(s) and float(s[0]) > 0 else 0
    sv = s.tolist()
    k = rule.keep(sv[:available], conv=conv)
    q = vecs[:, :k]
    proj = q.T @ mat  # k × (other side): rows of length σᵢ
    root = s[:k].clamp(min=1e-300).sqrt()
    left, right = q * root, proj / root[:, None]
    up, down = (left, right) if wide else (right.T, left.T)
    return Decomposed(up.contiguous(), down.contiguous(), sv, k, available, True)
