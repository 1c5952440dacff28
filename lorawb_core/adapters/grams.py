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
from typing import Any, NamedTuple

CHUNK_ELEMENTS = 1 << 21  # factor elements per batched product (8 MB of float32): the measured optimum
SMALL_RANK = 16  # below this, UᵀU is computed as (Uᵀ)(Uᵀ)ᵀ from a transposed copy (staged: give bytes)

_TORCH_NAMES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64", "I8": "int8",
                "U8": "uint8", "I16": "int16", "I32": "int32", "I64": "int64", "BOOL": "bool",
                "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


class Factor(NamedTuple):
    """One factor as a matrix (rows × cols) over memory it does not copy: a torch view or raw bytes."""

    data: Any  # a flat torch view of the rows·cols elements, or their bytes as a numpy uint8 array
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
        return Factor(m.reshape(-1), name, int(m.shape[0]), int(m.shape[1]))


class _Buffers(threading.local):
    stage: Any = None  # numpy uint8 staging area, and the same memory as a torch uint8 tensor
    stage_t: Any = None
    f32: Any = None


_buffers = _Buffers()


def _f32(n: int):
    """A float32 buffer of at least ``n`` elements, reused per thread up to the chunk size (a fresh allocation
    per chunk costs page faults that rival the arithmetic)."""
    import torch

    b = _buffers
    if b.f32 is not None and b.f32.numel() >= n:
        return b.f32
    buf = torch.empty(max(n, CHUNK_ELEMENTS), dtype=torch.float32)
    if n <= CHUNK_ELEMENTS:
        b.f32 = buf
    return buf


def _stage(n_bytes: int):
    """(numpy, torch) views of one uint8 staging buffer of at least ``n_bytes``, reused like :func:`_f32`."""
    import numpy as np
    import torch

    b = _buffers
    if b.stage is not None and b.stage.size >= n_bytes:
        return b.stage, b.stage_t
    stage = np.empty(max(n_bytes, 4 * CHUNK_ELEMENTS), dtype=np.uint8)
    stage_t = torch.from_numpy(stage)
    if n_bytes <= 4 * CHUNK_ELEMENTS:
        b.stage, b.stage_t = stage, stage_t
    return stage, stage_t


def _load_direct(pairs, part, f32, m: int, ru: int, rd: int, n: int) -> bool:
    """Convert the chunk's factors (torch views of the file) straight into the float32 buffer with one
    ``_foreach_copy_`` call: one pass over the bytes, no staging copy. False if that is not possible here."""
    import torch

    foreach = getattr(torch, "_foreach_copy_", None)
    if foreach is None:
        return False
    k = len(part)
    dst = list(f32[:k * m * ru].view(k, m * ru).unbind(0)) + \
        list(f32[k * m * ru:k * (m * ru + rd * n)].view(k, rd * n).unbind(0))
    foreach(dst, [pairs[i][0].data for i in part] + [pairs[i][1].data for i in part])
    return True


def _load_staged(pairs, part, f32, tu, td, m: int, ru: int, rd: int, n: int, small: bool) -> None:
    """Gather the chunk's factor bytes (numpy views) into the staging buffer, then convert them in one pass."""
    import numpy as np
    import torch

    k = len(part)
    bu = m * ru * torch.empty((), dtype=tu).element_size()
    bd = rd * n * torch.empty((), dtype=td).element_size()
    stage, stage_t = _stage(k * (bu + bd))
    np.concatenate([_bytes_of(pairs[i][0].data) for i in part] + [_bytes_of(pairs[i][1].data) for i in part],
                   out=stage[:k * (bu + bd)])
    u_src = stage_t[:k * bu].view(tu).view(k, m, ru)
    f32[k * m * ru:k * (m * ru + rd * n)].view(k, rd, n).copy_(stage_t[k * bu:k * (bu + bd)].view(td).view(k, rd, n))
    if small:
        f32[:k * m * ru].view(k, ru, m).copy_(u_src.mT)
    else:
        f32[:k * m * ru].view(k, m, ru).copy_(u_src)


def _is_tensor(data) -> bool:
    return hasattr(data, "untyped_storage")


def _bytes_of(data):
    """A factor's bytes as numpy uint8 (numpy data as is; a torch view through its uint8 reinterpretation)."""
    if not _is_tensor(data):
        return data
    import torch

    return data.contiguous().view(torch.uint8).numpy()


def gram_products(pairs: list[tuple[Factor, Factor]], *, keep: bool = False,
                  chunk_elements: int = CHUNK_ELEMENTS) -> tuple[list[float], list[tuple[Any, Any]] | None]:
    """For each (U, D): Σ (UᵀU)∘(DDᵀ) as a float, and with ``keep`` the float64 Grams (UᵀU, DDᵀ).

    A factor's ``data`` is a torch view of its elements (converted straight into the float32 buffer) or numpy
    bytes (gathered into a staging buffer first). Products run in float32 (relative error ~1e-7 against float64);
    NaN/Inf in a factor propagates into its sum.
    """
    import torch

    sums: list[float] = [0.0] * len(pairs)
    grams: list[tuple[Any, Any]] | None = [(None, None)] * len(pairs) if keep else None
    groups: dict[tuple, list[int]] = {}
    for i, (u, d) in enumerate(pairs):
        groups.setdefault((u.rows, u.cols, u.dtype, d.rows, d.cols, d.dtype), []).append(i)
    for (m, ru, udt, rd, n, ddt), idx in groups.items():
        tu, td = getattr(torch, _TORCH_NAMES[udt]), getattr(torch, _TORCH_NAMES[ddt])
        per = max(1, chunk_elements // max(1, m * ru + rd * n))
        small = ru < SMALL_RANK
        for start in range(0, len(idx), per):
            part = idx[start:start + per]
            k = len(part)
            f32 = _f32(k * (m * ru + rd * n))
            # the transposed U of small ranks is written by one batched copy from the staging buffer (a strided
            # write per factor is slow)
            direct = not small and all(_is_tensor(pairs[i][0].data) and _is_tensor(pairs[i][1].data) for i in part)
            if not (direct and _load_direct(pairs, part, f32, m, ru, rd, n)):
                _load_staged(pairs, part, f32, tu, td, m, ru, rd, n, small)
            u32 = f32[:k * m * ru]
            gu = torch.bmm(u32.view(k, ru, m), u32.view(k, ru, m).mT) if small else \
                torch.bmm(u32.view(k, m, ru).mT, u32.view(k, m, ru))
            d32 = f32[k * m * ru:k * (m * ru + rd * n)].view(k, rd, n)
            gd = torch.bmm(d32, d32.mT)
            gu64, gd64 = gu.double(), gd.double()
            for i, s in zip(part, (gu64 * gd64).sum((1, 2)).tolist(), strict=True):
                sums[i] = s
            if grams is not None:
                for j, i in enumerate(part):
                    grams[i] = (gu64[j], gd64[j])
    return sums, grams
