"""Exact low-rank factors ``ΔW = U·D`` (scale folded into U) of one module, per algorithm, or None when the module
has no usable factorisation and must be formed densely (Tucker LoHa/LoKr, full ΔW).

* LoRA/LoCon: ``U = up``, ``D = down`` (Tucker: ``D = mid ×₁ down``, rank unchanged).
* LoHa: ``(A₁B₁) ⊙ (A₂B₂) = (A₁ ⊙ᵣ A₂)·(B₁ ⊙꜀ B₂)`` with the row-wise / column-wise Khatri–Rao products, so a
  rank-(r₁, r₂) LoHa is exactly a rank r₁·r₂ product.
* LoKr: ``kron(P₁Q₁, P₂Q₂) = kron(P₁, P₂)·kron(Q₁, Q₂)`` on the weight flattened to (out, in·k·k).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _split(w):
    """(P, Q) with P·Q = w and the inner size min(rows, cols)."""
    import torch

    rows, cols = w.shape
    if cols <= rows:
        return w, torch.eye(cols, dtype=w.dtype)
    return torch.eye(rows, dtype=w.dtype), w


def _lokr_side(a, get: Callable[[str], Any], n: int):
    p = a.params
    if f"lokr_w{n}" in p or f"lokr_t{n}" in p:
        w = a._factor(get, n)
        return _split(w.reshape(w.shape[0], -1))
    down = get(f"lokr_w{n}_b").double()
    return get(f"lokr_w{n}_a").double(), down.reshape(down.shape[0], -1)


def lowrank_factors(a, get: Callable[[str], Any], m: int, n: int):
    """``(U, D)`` in float64 with ``U·D = scale·ΔW`` flattened to (m, n), or None (form ΔW densely)."""
    import torch

    s = a.scale()
    if a.name in ("lora", "locon"):
        up = get("up").double().reshape(m, -1)
        down = get("down").double()
        if "mid" in a.params:
            down = torch.einsum("rdij,dc->rcij", get("mid").double(), down.reshape(down.shape[0], -1))
        return up * s, down.reshape(up.shape[1], n)
    if a.name == "loha" and not a.tucker:
        a1, a2 = get("hada_w1_a").double(), get("hada_w2_a").double()
        b1 = get("hada_w1_b").double().reshape(a1.shape[1], n)
        b2 = get("hada_w2_b").double().reshape(a2.shape[1], n)
        u = (a1[:, :, None] * a2[:, None, :]).reshape(m, -1)
        d = (b1[:, None, :] * b2[None, :, :]).reshape(-1, n)
        return u * s, d
    if a.name == "lokr":
        p1, q1 = _lokr_side(a, get, 1)
        p2, q2 = _lokr_side(a, get, 2)
        if p1.shape[0] * p2.shape[0] != m or q1.shape[1] * q2.shape[1] != n:
            return None
        return torch.kron(p1, p2) * s, torch.kron(q1, q2)
    return None
