"""Tensor data of a file whose header was read: scalar values by positioned reads, and zero-copy torch views over a
memory map (torch is imported only when tensors are read)."""

from __future__ import annotations

import mmap
import os
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import InvalidTensor
from .reader import FileStructure, TensorInfo


def read_scalars(structure: FileStructure, keys: list[str]) -> dict[str, float]:
    """Values of one-element tensors (``alpha``, ``on_input``) read straight from their bytes: no torch needed."""
    out: dict[str, float] = {}
    if not keys:
        return out
    base = structure.header_bytes
    fd = os.open(structure.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:  # one positioned read per scalar: no map to fault in across a (possibly large or sparse) file
        for key in keys:
            info = structure.tensors[key]
            out[key] = _decode_scalar(info.dtype, os.pread(fd, info.end - info.start, base + info.start))
    finally:
        os.close(fd)
    return out


def _decode_scalar(dtype: str, raw: bytes) -> float:
    if dtype == "BF16":
        return struct.unpack("<f", b"\x00\x00" + raw[:2])[0]
    fmt = _SCALAR_FORMATS.get(dtype)
    if fmt is None or len(raw) < struct.calcsize(fmt):
        return float("nan")
    return float(struct.unpack(fmt, raw[: struct.calcsize(fmt)])[0])


_SCALAR_FORMATS = {"F16": "<e", "F32": "<f", "F64": "<d", "I8": "<b", "U8": "<B", "I16": "<h", "U16": "<H",
                   "I32": "<i", "U32": "<I", "I64": "<q", "U64": "<Q", "BOOL": "<?"}


_TORCH_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64", "I8": "int8",
                 "U8": "uint8", "I16": "int16", "I32": "int32", "I64": "int64", "BOOL": "bool",
                 "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


class TensorLoader:
    """Zero-copy torch views of a file's tensors over a private memory map; torch is imported only here.

    Offsets come from a header the safetensors library already validated (``read_structure``). The map is
    read-only: the views must never be written to (every consumer converts or multiplies them into new tensors).
    """

    def __init__(self, structure: FileStructure, *, populate: bool = True):
        self.structure = structure
        self.populate = populate  # fault the whole file in at once (every byte will be read soon)
        self._fh: Any = None
        self._map: mmap.mmap | None = None
        self._bytes: Any = None  # the map as a numpy uint8 array (mapped_bytes)
        self._tensor: Any = None  # the map as a torch uint8 tensor (mapped_tensor)

    def __enter__(self) -> TensorLoader:
        self._fh = open(self.structure.path, "rb")  # noqa: SIM115 - closed in __exit__
        # read-only shared map of the page cache, pre-faulted in one call where the OS can (every byte is read)
        if hasattr(mmap, "MAP_SHARED"):
            flags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if self.populate else 0)
            self._map = mmap.mmap(self._fh.fileno(), 0, flags=flags, prot=mmap.PROT_READ)
        else:  # Windows
            self._map = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
        return self

    def __exit__(self, *exc: object) -> None:
        self._bytes = self._tensor = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a view escaped the context; the map closes when it is collected
                pass
        if self._fh is not None:
            self._fh.close()
        self._map = self._fh = None

    def _torch_dtype(self, key: str, info: TensorInfo):
        import torch

        name = _TORCH_DTYPES.get(info.dtype)
        if name is None or not hasattr(torch, name):
            raise InvalidTensor(f"tensor {key}: dtype {info.dtype} cannot be used for LoRA math.")
        return getattr(torch, name)

    def release(self) -> None:
        """Drop the pages read so far from this process's resident set (they stay in the OS page cache; a later
        read faults them in again from the unchanged file). A streaming reader calls this now and then so its
        resident memory stays one module deep instead of growing to the whole file."""
        advice = getattr(mmap, "MADV_DONTNEED", None)
        if self._map is not None and advice is not None:
            self._map.madvise(advice)

    def check_dtype(self, key: str) -> None:
        """Raise the :class:`InvalidTensor` that :meth:`get` raises for a tensor whose dtype torch cannot use."""
        self._torch_dtype(key, self.structure.tensors[key])

    def mapped_bytes(self):
        """The whole mapped file as a numpy uint8 array (valid inside the context): tensor ``k`` is
        ``[header_bytes + start, header_bytes + end)``. Slicing numpy is far cheaper than a torch view per tensor."""
        import numpy as np

        if self._bytes is None:
            self._bytes = np.frombuffer(self._map, dtype=np.uint8)
        return self._bytes

    def mapped_tensor(self):
        """The whole mapped file as one torch uint8 tensor (read-only, valid inside the context)."""
        import torch

        if self._tensor is None:
            with warnings.catch_warnings():  # the map is read-only on purpose: nothing may write to a user's file
                warnings.simplefilter("ignore", UserWarning)
                self._tensor = torch.frombuffer(self._map, dtype=torch.uint8)
        return self._tensor

    def get(self, key: str):
        """The tensor ``key`` in its stored dtype, as a view of the mapped file (valid inside the context)."""
        import torch

        info = self.structure.tensors[key]
        dtype = self._torch_dtype(key, info)
        if info.numel == 0:
            return torch.zeros(info.shape, dtype=dtype)
        with warnings.catch_warnings():  # the map is read-only on purpose: nothing may write to a user's file
            warnings.simplefilter("ignore", UserWarning)
            t = torch.frombuffer(self._map, dtype=dtype, count=info.numel, offset=self.structure.header_bytes + info.start)
        return t.view(info.shape)


@contextmanager
def open_tensors(structure: FileStructure, *, populate: bool = True) -> Iterator[TensorLoader]:
    with TensorLoader(structure, populate=populate) as loader:
        yield loader
