"""Batched r×r Gram products of many low-rank factor pairs (U, D): ‖U·D‖²_F = Σ (UᵀU)∘(DDᵀ).

The work is a stream over the factors' bytes: pairs of equal shapes and dtypes are gathered chunk by chunk into a
reused staging buffer (one ``numpy.concatenate`` of byte views: no per-tensor torch call), converted to float32 in
one pass into a reused buffer (no fresh allocation, so no page faults per chunk; a chunk is small enough to stay in
cache for the products), and multiplied with one batched float32 product per side. Small ranks take the ``A·Aᵀ``
form for U as well (the BLAS kernels for a tall r-column ``AᵀA`` are slow below r = 16). Grams and the final sums are
float64.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

CHUNK_ELEMENTS = 1 << 21  # factor elements per batched product (8 MB of float32): the measured optimum
_SMALL_RANK = 16  # below this, UᵀU is computed as (Uᵀ)(Uᵀ)ᵀ from a transposed copy

_TORCH_NAMES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64", "I8": "int8",
                "U8": "uint8", "I16": "int16", "I32": "int32", "I64": "int64", "BOOL": "bool",
                "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


@dataclass(frozen=True)
class Factor:
    """One factor as a matrix (rows × cols) over its raw little-endian bytes (a numpy uint8 view, not a copy)."""

    data: Any  # numpy.ndarray of uint8, rows·cols·itemsize long
    dtype: str  # safetensors dtype name: F16, BF16, F32, …
    rows: int
    cols: int

    @staticmethod
    def of_tensor(t) -> Factor:
        """A Factor over a torch tensor's memory (made contiguous first), viewed as (out, rest)."""
        import torch

        m = t.reshape(t.shape[0], -1).contiguous()
        name = next((k for k, v in _TORCH_NAMES.items() if getattr(torch, v, None) == m.dtype), None)
        if name is None:
            raise TypeError(f"unsupported dtype {m.dtype}")
        return Factor(m.reshape(-1).view(torch.uint8).numpy(), name, int(m.shape[0]), int(m.shape[1]))


class _Buffers(threading.local):
    stage: Any = None  # numpy uint8 staging area
    stage_t: Any = None  # the same memory as a torch uint8 tensor
    f32: Any = None


_buffers = _Buffers()


def _scratch(n_bytes: int, n_f32: int):
    """(numpy stage, torch stage, float32 buffer) with room for a chunk; kept per thread when chunk-sized."""
    import numpy as np
    import torch

    b = _buffers
    if b.stage is not None and b.stage.size >= n_bytes and b.f32.numel() >= n_f32:
        return b.stage, b.stage_t, b.f32
    keep = n_bytes <= 4 * CHUNK_ELEMENTS and n_f32 <= CHUNK_ELEMENTS  # a chunk of ≤ 4-byte factors
    stage = np.empty(max(n_bytes, 4 * CHUNK_ELEMENTS) if keep else n_bytes, dtype=np.uint8)
    f32 = torch.empty(max(n_f32, CHUNK_ELEMENTS) if keep else n_f32, dtype=torch.float32)
    stage_t = torch.from_numpy(stage)
    if keep:
        b.stage, b.stage_t, b.f32 = stage, stage_t, f32
    return stage, stage_t, f32


def gram_products(pairs: list[tuple[Factor, Factor]], *, keep: bool = False,
                  chunk_elements: int = CHUNK_ELEMENTS) -> tuple[list[float], list[tuple[Any, Any]] | None]:
    """For each (U, D): Σ (UᵀU)∘(DDᵀ) as a float, and with ``keep`` the float64 Grams (UᵀU, DDᵀ).

    Products run in float32 (relative error ~1e-7 against float64); NaN/Inf in a factor propagates into its sum.
    """
    import numpy as np
    import torch

    sums: list[float] = [0.0] * len(pairs)
    grams: list[tuple[Any, Any]] | None = [(None, None)] * len(pairs) if keep else None
    groups: dict[tuple, list[int]] = {}
    for i, (u, d) in enumerate(pairs):
        groups.setdefault((u.rows, u.cols, u.dtype, d.rows, d.cols, d.dtype), []).append(i)
    for (m, ru, udt, rd, n, ddt), idx in groups.items():
        tu, td = getattr(torch, _TORCH_NAMES[udt]), getattr(torch, _TORCH_NAMES[ddt])
        bu = m * ru * torch.empty((), dtype=tu).element_size()
        bd = rd * n * torch.empty((), dtype=td).element_size()
        per = max(1, chunk_elements // max(1, m * ru + rd * n))
        small = ru < _SMALL_RANK
        for start in range(0, len(idx), per):
            part = idx[start:start + per]
            k = len(part)
            stage, stage_t, f32 = _scratch(k * (bu + bd), k * (m * ru + rd * n))
            np.concatenate([pairs[i][0].data for i in part] + [pairs[i][1].data for i in part],
                           out=stage[:k * (bu + bd)])
            u_src = stage_t[:k * bu].view(tu).view(k, m, ru)
            d_src = stage_t[k * bu:k * (bu + bd)].view(td).view(k, rd, n)
            d32 = f32[k * m * ru:k * (m * ru + rd * n)].view(k, rd, n)
            d32.copy_(d_src)
            if small:
                ut32 = f32[:k * m * ru].view(k, ru, m)
                ut32.copy_(u_src.mT)
                gu = torch.bmm(ut32, ut32.mT)
            else:
                u32 = f32[:k * m * ru].view(k, m, ru)
                u32.copy_(u_src)
                gu = torch.bmm(u32.mT, u32)
            gd = torch.bmm(d32, d32.mT)
            gu64, gd64 = gu.double(), gd.double()
            for i, s in zip(part, (gu64 * gd64).sum((1, 2)).tolist(), strict=True):
                sums[i] = s
            if grams is not None:
                for j, i in enumerate(part):
                    grams[i] = (gu64[j], gd64[j])
    return sums, grams
