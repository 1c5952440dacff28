"""What every algorithm adapter shares: the probe/measure contract and the low-rank math.

An adapter is built from the header only (``probe``): shapes, rank, alpha, the target weight's shape. Tensor
math (``energy``, ``delta``) receives a ``get(param) -> torch.Tensor`` callable so data is read only then.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from ..errors import InvalidTensor
from ..reader import TensorInfo

Getter = Callable[[str], Any]  # canonical param name -> float torch tensor
# Parameters any algorithm may carry besides its own factors.
class RankFree(NamedTuple):
    """What ``Adapter.rank_free`` finds: the module's rank and target shape."""

    rank: int
    target_shape: tuple[int, ...]


COMMON_EXTRAS = ("alpha", "dora_scale", "magnitude", "up_bias", "diff_b", "bias", "scale")
CHUNK_ELEMENTS = 1 << 22  # bound for chunked materialisation (LoHa): 4M floats = 16 MB per step


@dataclass
class Energy:
    """‖scale·ΔW‖² of one module, and how exact that figure is."""

    energy: float  # squared Frobenius norm (weight + bias parts)
    exact: bool = True  # False: adapter-only figure, the real ΔW needs the base weight
    grams: tuple[Any, Any] | None = None  # (UᵀU, DDᵀ) of a low-rank module: its singular values come from these


@dataclass
class Adapter:
    """One module's adapter, as read from the header. Subclasses set ``name`` and implement the hooks."""

    name: ClassVar[str] = ""
    needs_base: ClassVar[bool] = False  # ΔW depends on the base weight (DoRA, OFT, GLoRA, (IA)³)
    figure: ClassVar[str] = "‖scale·ΔW‖_F"  # what the energy measures, shown to users

    module: str
    params: dict[str, TensorInfo]
    rank: int | None = None
    alpha: float | None = None
    target_shape: tuple[int, ...] = ()
    problems: list[str] = field(default_factory=list)
    alpha_override: float | None = None  # from PEFT adapter metadata when the file has no alpha tensor
    rs_lora: bool = False

    # ---- probing -------------------------------------------------------------------------------------------
    @classmethod
    def claims(cls, params: dict[str, TensorInfo]) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def consumed(cls) -> tuple[str, ...]:  # pragma: no cover - overridden
        """Canonical params this adapter owns (besides ``COMMON_EXTRAS``)."""
        raise NotImplementedError

    @classmethod
    def probe(cls, module: str, params: dict[str, TensorInfo]) -> Adapter | None:
        if not cls.claims(params):
            return None
        consumed = cls.consumed()
        own = {k: v for k, v in params.items() if k in consumed or k in COMMON_EXTRAS}
        adapter = cls(module=module, params=own)
        try:
            adapter.inspect_shapes()
        except (IndexError, ValueError):  # a factor with fewer dimensions than the algorithm reads
            shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in own.items() if k != "alpha")
            adapter.problems.append(f"the {cls.name} factors cannot be multiplied ({shapes})")
        empty = [k for k, v in own.items() if k not in ("alpha", "scale") and 0 in v.shape]
        if adapter.rank == 0 or empty:
            adapter.problems.append("rank-0 factors (" + ", ".join(
                f"{k} {list(own[k].shape)}" for k in empty or [k for k in own if k != "alpha"]) +
                "): the module changes nothing and cannot be applied")
        return adapter

    @classmethod
    def rank_free(cls, names: tuple[str, ...], shapes: tuple[tuple[int, ...], ...]) -> RankFree | None:
        """For a module this adapter claims, with canonical params ``names`` of ``shapes``: its rank and target shape
        when they are all its facts depend on besides the tensor keys (no problem possible, no other fact moved by
        the rank), so facts probed at one rank hold at any other (``module_facts``); None when unsure."""
        return None

    def inspect_shapes(self) -> None:
        """Fill rank and target_shape from the header; record shape problems in ``problems``."""

    # ---- scale ---------------------------------------------------------------------------------------------
    @property
    def decomposed(self) -> bool:
        return "dora_scale" in self.params or "magnitude" in self.params

    @property
    def algorithm(self) -> str:
        """Display name of the algorithm mix entry, e.g. ``lora``, ``dora``, ``loha+dora``."""
        if self.decomposed:
            return "dora" if self.name in ("lora", "locon") else f"{self.name}+dora"
        return self.name

    @property
    def requires_base(self) -> bool:
        return self.needs_base or self.decomposed

    def scale(self) -> float:
        """alpha/rank (rs-LoRA: alpha/√rank); 1 when there is no alpha (ComfyUI and A1111 agree)."""
        alpha = self.alpha if self.alpha is not None else self.alpha_override
        if alpha is None or not self.rank:
            return 1.0
        return alpha / (math.sqrt(self.rank) if self.rs_lora else self.rank)

    # ---- math ----------------------------------------------------------------------------------------------
    def energy(self, get: Getter) -> Energy:  # pragma: no cover - overridden
        raise NotImplementedError

    def delta(self, get: Getter):  # pragma: no cover - overridden
        """Dense scale·ΔW (weight only), for tests, merges and the brute-force baseline."""
        raise NotImplementedError

    def bias_energy(self, get: Getter, s: float) -> float:
        total = 0.0
        for p in ("up_bias", "diff_b", "bias"):
            if p in self.params:
                b = get(p)
                total += float((b.double() * (s if p == "up_bias" else 1.0)).pow(2).sum())
        return total

    # ---- helpers for subclasses ----------------------------------------------------------------------------
    def shape_of(self, param: str) -> tuple[int, ...]:
        return self.params[param].shape

    def require(self, ok: bool, message: str | Callable[[], str]) -> None:
        """Record ``message`` as a problem unless ``ok`` (a callable message is formatted only then: probing
        runs for every module of every new index)."""
        if not ok:
            self.problems.append(message() if callable(message) else message)

    def check_valid(self) -> None:
        if self.problems:
            raise InvalidTensor(f"module {self.module}: " + "; ".join(self.problems))


# ---- shared math ---------------------------------------------------------------------------------------------
def flat2(t):
    """View a factor as a matrix: (out, rest)."""
    return t.reshape(t.shape[0], -1)


_scratch = threading.local()


def as_float32(t):
    """``t`` as float32, converted into a reused per-thread buffer (no allocation, no page faults per tensor).

    The result is only valid until the next call in the same thread.
    """
    import torch

    if t.dtype == torch.float32:
        return t
    n = t.numel()
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.numel() < n:
        buf = torch.empty(max(n, 1 << 20), dtype=torch.float32)
        _scratch.buf = buf
    return buf[:n].view(t.shape).copy_(t)


def gram_pair(up, down):
    """r×r Grams of U·D, in float64: (UᵀU, D·Dᵀ). Products run in float32 (exact enough: relative error ~1e-7)."""
    u = flat2(as_float32(flat2(up)))
    gu = (u.T @ u).double()
    d = as_float32(flat2(down))
    gd = (d @ d.T).double()
    return gu, gd


def lowrank_energy(up, down) -> tuple[float, Any, Any]:
    """‖U·D‖²_F = tr((UᵀU)(DDᵀ)) from two r×r Grams, never forming U·D; the Grams are returned for the spectrum."""
    gu, gd = gram_pair(up, down)
    return float((gu * gd).sum()), gu, gd  # tr(A·B) = Σ A∘B for symmetric A, B


def lowrank_grams_batch(pairs: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """(UᵀU, DDᵀ) in float64 for many LoRA modules (torch tensors) at once: the batched products of
    :mod:`.grams` (modules of equal shapes multiplied together, float32 products)."""
    from .grams import Factor, gram_products

    _, grams = gram_products([(Factor.of_tensor(u), Factor.of_tensor(d)) for u, d in pairs], keep=True)
    return grams or []


def singular_values_batch(grams: list[tuple[Any, Any]]) -> list[list[float]]:
    """Singular values of each U·D from its Grams, batched per rank: σ² = eig(G_U·G_D) = eigvalsh(Lᵀ·G_D·L) with
    G_U = L·Lᵀ (Cholesky; a relative 1e-12 jitter keeps rank-deficient U factorisable)."""
    import torch

    out: list[list[float]] = [[] for _ in grams]
    by_rank: dict[int, list[int]] = {}
    for i, (gu, _) in enumerate(grams):
        by_rank.setdefault(gu.shape[0], []).append(i)
    for idx in by_rank.values():
        gu = torch.stack([grams[i][0] for i in idx])
        gd = torch.stack([grams[i][1] for i in idx])
        r = gu.shape[-1]
        jitter = gu.diagonal(dim1=-2, dim2=-1).sum(-1).clamp(min=1e-300) * 1e-12
        chol, _ = torch.linalg.cholesky_ex(gu + jitter[:, None, None] * torch.eye(r, dtype=gu.dtype))
        sig = torch.linalg.eigvalsh(chol.mT @ gd @ chol).clamp(min=0).sqrt().flip(-1)
        for row, values in zip(idx, sig.tolist(), strict=True):
            out[row] = values
    return out


def tucker_energy(up, mid, down) -> float:
    """Σ_k ‖U·M_k·D‖² = Σ_k tr(M_kᵀ·G_U·M_k·G_D) for Tucker LoCon (M: (r_u, r_d, kh, kw))."""
    gu, gd = gram_pair(up, down)
    m = mid.double()
    total = 0.0
    for i in range(m.shape[2]):
        for j in range(m.shape[3]):
            mk = m[:, :, i, j]
            total += float(((mk.T @ gu @ mk) * gd).sum())
    return total


def effective_rank(singular_values: list[float]) -> float | None:
    """Roy & Vetterli's effective rank: exp of the entropy of the normalised singular values."""
    total = sum(singular_values)
    if total <= 0:
        return None
    h = 0.0
    for s in singular_values:
        p = s / total
        if p > 0:
            h -= p * math.log(p)
    return math.exp(h)
