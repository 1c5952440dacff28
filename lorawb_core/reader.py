"""Reading LoRA files: structure from the safetensors header, tensors only when math needs them.

A new header is validated by the ``safetensors`` library (or, above ``SAFE_OPEN_HEADER_BYTES``, by the same checks
here over the tensor index alone, so that one huge metadata value costs one decode); this module adds the cheap
pre-checks that turn a failure into a sentence a user can act on (a pickle, a Git LFS pointer, an HTML page saved as
``.safetensors``, a truncated download, a key written twice, an absurd tensor count) and never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import stat
import struct
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CorruptFile, InvalidTensor, UnreadableFile, UnsupportedFormat

MAX_HEADER_BYTES = 100 * 1024 * 1024
MAX_TENSORS = 12_000  # real LoRAs hold < 6,000 (full-layer LyCORIS on SDXL with both text encoders, DoRA)
SAFE_OPEN_HEADER_BYTES = 8 << 20  # larger headers are validated by _validated_index (bounded memory)
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"}
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "C64": 8, "F64": 8, "I64": 8, "U64": 8,
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it: no data is read."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    start: int = 0  # byte offsets relative to the start of the data region (as in the header)
    end: int = 0

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class FileStructure:
    """What a safetensors header says about a file: tensor index and ``__metadata__``."""

    path: Path
    size: int
    header_bytes: int  # 8 + JSON header length: where the tensor data starts (the addnet hash starts here)
    mtime_ns: int
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    index_digest: bytes = b""  # digest of the header without its metadata: equal for files of one structure


def _describe_start(head: bytes) -> str | None:
    """Name what a file that is not safetensors most likely is, from its first bytes."""
    if head.startswith(b"PK\x03\x04"):
        return "a PyTorch zip/pickle checkpoint"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer (the real file was never downloaded)"
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype html", b"<html", b"<?xml")):
        return "an HTML/XML page (probably a failed or login-walled download)"
    if stripped.startswith((b"{", b"[")):
        return "a JSON text file"
    if len(head) >= 8 and all(b in _TEXT_BYTES for b in head[:8]):
        return "a text file"  # a real header length has zero bytes in its high part
    return None


_TEXT_BYTES = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


def read_structure(path: str | os.PathLike[str]) -> FileStructure:
    """Read a LoRA file's tensor index and metadata from its header only.

    Raises :class:`UnreadableFile`, :class:`UnsupportedFormat` or :class:`CorruptFile` with a message that
    names the file and says what to do. Nothing is written and no tensor data is read.
    """
    p = Path(path)
    shown = os.fsdecode(p)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise UnreadableFile(f"{shown}: no such file; check the path or rescan the library.") from None
    except OSError as exc:
        raise UnreadableFile(f"{shown}: cannot stat the file ({exc.strerror}).") from None
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableFile(f"{shown}: not a regular file; point lorawb at .safetensors files or their folders.")
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsupportedFormat(
            f"{shown}: '{p.suffix}' files are Python pickles, which can run code when loaded and are never opened "
            "by lorawb; convert it to .safetensors (for example with kohya's convert tools) and inspect that."
        )
    if st.st_size == 0:
        raise CorruptFile(f"{shown}: the file is empty (0 bytes); the download or copy probably failed, fetch it again.")
    try:
        fh = open(p, "rb", buffering=0)  # noqa: SIM115 - closed below
    except PermissionError:
        raise UnreadableFile(f"{shown}: permission denied; make the file readable for this user.") from None
    except OSError as exc:
        raise UnreadableFile(f"{shown}: cannot read the file ({exc.strerror}).") from None
    with fh:  # one descriptor for the sniffing read and the header read
        try:
            head = fh.read(64)
        except OSError as exc:
            raise UnreadableFile(f"{shown}: cannot read the file ({exc.strerror}).") from None
        n = _check_head(shown, head, st.st_size)
        buf = _header_buffer(n)
        got = min(len(head) - 8, n)
        buf[:got] = head[8:8 + n]
        try:
            with memoryview(buf) as view:
                while got < n and (k := fh.readinto(view[got:n])):
                    got += k
        except OSError as exc:
            raise UnreadableFile(f"{shown}: cannot read the file ({exc.strerror}).") from None
    tensors, metadata, digest = _open_header(p, shown, buf, min(got, n), n, st.st_size)
    return FileStructure(path=p, size=st.st_size, header_bytes=8 + n, mtime_ns=st.st_mtime_ns,
                         tensors=tensors, metadata=metadata, index_digest=digest)


_buffers = threading.local()
_KEEP_BUFFER = 8 << 20


def _header_buffer(n: int) -> bytearray:
    """A per-thread buffer for headers: a fresh multi-megabyte allocation per file costs more page faults than
    everything else a known header needs. Headers above ``_KEEP_BUFFER`` get a buffer of their own."""
    buf = getattr(_buffers, "buf", None)
    if buf is not None and len(buf) >= n:
        return buf
    buf = bytearray(max(n, 1 << 20))
    if n <= _KEEP_BUFFER:
        _buffers.buf = buf
    return buf


def _check_head(shown: str, head: bytes, size: int) -> int:
    """The JSON header length from a file's first bytes, or the error that says what the file is instead."""
    what = _describe_start(head)
    if what:
        raise UnsupportedFormat(f"{shown}: this is {what}, not a safetensors file; replace it with the real .safetensors file.")
    if len(head) < 8:
        raise CorruptFile(f"{shown}: only {size} bytes, too short for a safetensors header; the file is truncated.")
    (n,) = struct.unpack("<Q", head[:8])
    if n > MAX_HEADER_BYTES:
        raise CorruptFile(
            f"{shown}: the header claims {n:,} bytes (limit {MAX_HEADER_BYTES:,}); this is not a safetensors file or it is "
            "damaged."
        )
    if 8 + n > size:
        raise CorruptFile(
            f"{shown}: the header claims {n:,} bytes but the file has only {size:,}; the file is truncated, "
            "download it again."
        )
    if n == 0 or head[8:9] != b"{":
        raise UnsupportedFormat(f"{shown}: no safetensors JSON header at the start; this is not a safetensors file.")
    return n


@dataclass(frozen=True)
class _Index:
    tensors: dict[str, TensorInfo]
    data_end: int
    prefix: bytes  # the header before its metadata ...
    suffix: bytes  # ... and after it, without trailing padding: compared byte for byte with a new file's
    digest: bytes  # digest of prefix + suffix: identifies the index (the analysis cache key)


# Tensor indexes seen before, by digest; ``_CANDIDATES`` finds them by where the metadata sits and the length of
# the rest, so a known index costs two ``memcmp`` of the header instead of a digest, a parse or a copy.
_INDEX_CACHE: OrderedDict[bytes, _Index] = OrderedDict()
_CANDIDATES: dict[tuple[int, int], list[bytes]] = {}
_INDEX_CACHE_SIZE = 256
_INDEX_CACHE_TENSORS = 250_000  # and at most this many tensors in all: memory bounded whatever the library holds
_cache_lock = threading.Lock()
_META_KEY = b'"__metadata__"'
_JSON_SPACE = b" \t\r\n"


@dataclass
class _Split:
    """A header split around its ``__metadata__`` value: ``buf[:pos]`` + ``buf[end:tail]`` is the tensor index
    (``tail`` drops trailing JSON whitespace: writers pad the header to 8 bytes, so files of one structure differ
    there by the length of their metadata). ``meta`` is None when the split cannot be trusted."""

    meta: dict[str, str] | None
    pos: int
    end: int
    tail: int


def _split_metadata(buf: bytearray | bytes, n: int) -> _Split:
    """Find and decode the ``__metadata__`` object of the header ``buf[:n]`` without copying the header."""
    tail = n
    while tail > 0 and buf[tail - 1] in _JSON_SPACE:
        tail -= 1
    pos = _metadata_position(buf, n)
    if pos < 0:
        return _Split({}, tail, tail, tail)
    colon = buf.find(b":", pos + 14, n)
    if colon < 0 or not _valid_utf8(buf[pos:colon]):
        return _Split(None, pos, pos, tail)
    start = colon + 1
    while start < n and buf[start] in _JSON_SPACE:
        start += 1
    decoded = _decode_object(memoryview(buf)[start:n])
    if decoded is None:
        return _Split(None, pos, pos, tail)
    obj, length = decoded
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in obj.items()):
        return _Split(None, pos, pos, tail)
    return _Split(obj, pos, min(start + length, tail), tail)


def _metadata_position(buf: bytearray | bytes, n: int) -> int:
    """Where ``"__metadata__"`` first occurs in ``buf[:n]`` (-1: nowhere). safetensors writes it first; other
    writers put it where the known files of their structure have it: if the header starts with such a file's
    bytes before it (a ``memcmp``), no earlier occurrence is possible, and the whole-header search is skipped."""
    if buf.startswith(b'{"__metadata__"', 0, n):
        return 1
    with _cache_lock:
        for (pos, _), digests in _CANDIDATES.items():
            if pos > 1 and buf.startswith(_META_KEY, pos, n) and any(
                    d in _INDEX_CACHE and buf.startswith(_INDEX_CACHE[d].prefix) for d in digests):
                return pos
    return buf.find(_META_KEY, 0, n)


def _decode_object(data: memoryview, window: int = 1 << 16) -> tuple[Any, int] | None:
    """The JSON value at the start of ``data`` and its length in bytes, decoding only as much as it needs (a
    growing window: a value cut by the window end fails to parse and is retried with more)."""
    import codecs

    try:
        while True:
            whole = window >= len(data)
            text, _ = codecs.utf_8_decode(data[:window], "strict", whole)
            try:
                obj, end = json.JSONDecoder().raw_decode(text)
            except ValueError:
                if whole:
                    return None
                window *= 4
                continue
            return obj, (end if text.isascii() else len(text[:end].encode("utf-8")))
    except UnicodeDecodeError:
        return None
    finally:
        data.release()


def _valid_utf8(b: bytes | bytearray) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _known_index(buf: bytearray | bytes, split: _Split) -> _Index | None:
    key = (split.pos, split.pos + split.tail - split.end)
    with _cache_lock:
        for digest in _CANDIDATES.get(key, ()):
            known = _INDEX_CACHE.get(digest)  # None: the cache was cleared from outside
            if known is not None and buf.startswith(known.prefix) and \
                    buf.startswith(known.suffix, split.end, split.tail):
                _INDEX_CACHE.move_to_end(digest)
                return known
    return None


def _remember_index(index: _Index) -> None:
    key = (len(index.prefix), len(index.prefix) + len(index.suffix))
    with _cache_lock:
        if index.digest in _INDEX_CACHE:
            return
        _INDEX_CACHE[index.digest] = index
        digests = _CANDIDATES.setdefault(key, [])
        if index.digest not in digests:
            digests.append(index.digest)
        total = sum(len(i.tensors) for i in _INDEX_CACHE.values())
        while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE or (total > _INDEX_CACHE_TENSORS and len(_INDEX_CACHE) > 1):
            _, old = _INDEX_CACHE.popitem(last=False)
            total -= len(old.tensors)
            old_key = (len(old.prefix), len(old.prefix) + len(old.suffix))
            digests = _CANDIDATES.get(old_key, [])
            if old.digest in digests:
                digests.remove(old.digest)
            if not digests:
                _CANDIDATES.pop(old_key, None)


def _open_header(p: Path, shown: str, buf: bytearray, got: int, n: int,
                 size: int) -> tuple[dict[str, TensorInfo], dict[str, str], bytes]:
    """Index the JSON header ``buf[:got]`` (``n`` bytes long by the file's own count). A tensor index seen before
    (same keys, shapes, dtypes, offsets: one trainer's files) is reused after checking the file size; a new one is
    validated by the safetensors library (headers up to ``SAFE_OPEN_HEADER_BYTES``) or, for larger headers, by
    :func:`_validated_index` over the tensor index alone, so a huge metadata value is decoded once, not four times.
    Duplicated keys and more than ``MAX_TENSORS`` tensors are refused."""
    split = _split_metadata(buf, got)
    known = _known_index(buf, split) if split.meta is not None else None
    if known is not None and size == 8 + n + known.data_end:
        return known.tensors, split.meta, known.digest
    count = buf.count(b'"data_offsets"', 0, split.pos) + buf.count(b'"data_offsets"', split.end, got)  # ≥ tensors
    if count > MAX_TENSORS:
        raise CorruptFile(f"{shown}: the header lists about {count:,} tensors (limit {MAX_TENSORS:,}); no LoRA has "
                          "that many, so this file is damaged or not a LoRA. Replace it with the real file.")
    prefix, suffix = bytes(buf[:split.pos]), bytes(buf[split.end:split.tail])
    digest = known.digest if known is not None else hashlib.blake2b(prefix + suffix, digest_size=16).digest()
    if n > SAFE_OPEN_HEADER_BYTES:
        if split.meta is not None:  # the header with its metadata value left out
            index = _loads_header(shown, prefix + (b'"__metadata__":{}' if split.end > split.pos else b"") + suffix)
            meta = split.meta
        else:
            index = _loads_header(shown, bytes(buf[:got]))
            meta = index.get("__metadata__", {})
            if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
                raise CorruptFile(f"{shown}: damaged safetensors header: __metadata__ must map names to strings "
                                  "(the file is damaged or not safetensors).")
        tensors, data_end = _validated_index(shown, index, size - 8 - n)
        if split.meta is not None:
            _remember_index(_Index(tensors, data_end, prefix, suffix, digest))
        return tensors, meta, digest
    raw = bytes(buf[:got])
    from safetensors import SafetensorError, safe_open

    try:
        with utf8_path(p) as usable, safe_open(usable, framework="np") as f:
            checked_meta = f.metadata() or {}
    except SafetensorError as exc:
        raise CorruptFile(f"{shown}: damaged safetensors header: {_explain(str(exc))}") from None
    except (OSError, ValueError) as exc:
        raise UnreadableFile(f"{shown}: cannot read the file ({exc}).") from None
    header = _loads_header(shown, raw)
    tensors = {}
    data_end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry["data_offsets"]
        start, end = int(offsets[0]), int(offsets[1])
        if end > data_end:
            data_end = end
        tensors[key] = TensorInfo(key, entry["dtype"], tuple(map(int, entry["shape"])), start, end)
    checked = {str(k): str(v) for k, v in checked_meta.items()}
    if split.meta == checked:  # the split was exact: later files with this index can skip the full parse
        _remember_index(_Index(tensors, data_end, prefix, suffix, digest))
    return tensors, checked, digest


class _DuplicateKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def _loads_header(shown: str, raw: bytes) -> dict[str, Any]:
    """The header JSON (a memory-bounded part of it, see _open_header), refusing a key written twice: Python's json
    keeps the last one silently, so the file would mean one thing to us and maybe another to its next reader."""
    try:
        header = json.loads(raw, object_pairs_hook=_unique_pairs)
    except _DuplicateKey as exc:
        raise CorruptFile(f"{shown}: the header holds the key {str(exc)[:200]!r} twice; readers disagree on which one "
                          "counts, so the file is refused. Re-save it from its source.") from None
    except (ValueError, RecursionError) as exc:
        raise CorruptFile(f"{shown}: damaged safetensors header: {_explain(f'invalid JSON ({exc})')}") from None
    if not isinstance(header, dict):
        raise CorruptFile(f"{shown}: damaged safetensors header: {_explain('invalid JSON: not an object')}")
    return header


def _validated_index(shown: str, header: dict[str, Any], data_len: int) -> tuple[dict[str, TensorInfo], int]:
    """The checks the safetensors library makes (known dtypes, byte lengths that fit dtype × shape, offsets that
    tile the data region exactly), for headers too large to hand to it whole."""
    def damaged(why: str) -> CorruptFile:
        return CorruptFile(f"{shown}: damaged safetensors header: {why}")

    tensors: dict[str, TensorInfo] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            ok = isinstance(dtype, str) and all(type(v) is int and v >= 0 for v in (*shape, start, end))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise damaged(f"tensor {key[:200]!r} is not described by dtype, shape and data_offsets "
                          "(the file is damaged or not safetensors).")
        if dtype not in DTYPE_BYTES:
            raise damaged(_explain(f"unknown variant {dtype[:40]!r} for tensor {key[:200]!r}"))
        info = TensorInfo(key, dtype, tuple(shape), start, end)
        if end < start or info.numel * DTYPE_BYTES[dtype] != end - start:
            raise damaged(f"tensor {key[:200]!r}: {dtype} {list(shape)} does not fit its {end - start:,} bytes "
                          "(the file is damaged).")
        tensors[key] = info
    at = 0
    for info in sorted(tensors.values(), key=lambda t: (t.start, t.end)):
        if info.start != at:
            raise damaged(_explain(f"invalid offset for tensor {info.key[:200]!r}"))
        at = info.end
    if at != data_len:
        raise damaged(_explain(f"metadata incomplete buffer: the tensors end at {at:,} of {data_len:,} data bytes"))
    return tensors, at


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


def _explain(msg: str) -> str:
    low = msg.lower()
    if "not fully covered" in low or "incomplete" in low:
        return f"{msg} (the tensor data does not match the header: truncated or padded file; download it again)."
    if "invalid offset" in low:
        return f"{msg} (tensor offsets overlap or point outside the data; the file is damaged)."
    if "unknown variant" in low:
        return f"{msg} (a tensor has a dtype this safetensors version does not know; update safetensors or re-save)."
    if "invalid json" in low or "utf" in low:
        return f"{msg} (the header is not a JSON object; the file is damaged or not safetensors)."
    return msg


_TORCH_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64", "I8": "int8",
                 "U8": "uint8", "I16": "int16", "I32": "int32", "I64": "int64", "BOOL": "bool",
                 "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


class TensorLoader:
    """Zero-copy torch views of a file's tensors over a private memory map; torch is imported only here.

    Offsets come from a header the safetensors library already validated (``read_structure``). The map is
    read-only: the views must never be written to (every consumer converts or multiplies them into new tensors).
    """

    def __init__(self, structure: FileStructure):
        self.structure = structure
        self._fh: Any = None
        self._map: mmap.mmap | None = None
        self._bytes: Any = None  # the map as a numpy uint8 array (mapped_bytes)
        self._tensor: Any = None  # the map as a torch uint8 tensor (mapped_tensor)

    def __enter__(self) -> TensorLoader:
        self._fh = open(self.structure.path, "rb")  # noqa: SIM115 - closed in __exit__
        # read-only shared map of the page cache, pre-faulted in one call where the OS can (every byte is read)
        if hasattr(mmap, "MAP_SHARED"):
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
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
def utf8_path(path: Path) -> Iterator[str]:
    """A path string the safetensors library accepts: it refuses names that are not valid UTF-8.

    Such names (legal on Linux) are reached through the ``/proc/self/fd`` link of an open descriptor.
    """
    try:
        os.fsencode(path).decode("utf-8")
        yield str(path)
        return
    except UnicodeDecodeError:
        pass
    if not os.path.isdir("/proc/self/fd"):
        raise UnreadableFile(f"{os.fsdecode(path)!r}: the file name is not valid UTF-8; rename the file.")
    fd = os.open(path, os.O_RDONLY)
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


@contextmanager
def open_tensors(structure: FileStructure) -> Iterator[TensorLoader]:
    with TensorLoader(structure) as loader:
        yield loader
