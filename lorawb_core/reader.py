"""Reading a LoRA file's structure from its safetensors header (tensor data: :mod:`.tensors`).

A new header is parsed here without its metadata value (decoded once, by :func:`.header_index.split_metadata`) and
validated with the safetensors library's checks (:func:`_validated_index`, held to the library's verdicts by
tests/test_header_validation.py); this module adds the cheap pre-checks that turn a failure into a sentence a user
can act on (a pickle, a Git LFS pointer, an HTML page saved as ``.safetensors``, a truncated download, a key written
twice, an absurd tensor count) and never unpickles anything.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

from .errors import CorruptFile, UnreadableFile, UnsupportedFormat
from .header_index import (
    DTYPE_BYTES,
    DuplicateKey,
    HeaderSplit,
    KnownIndex,
    TensorInfo,
    has_lone_surrogate,
    index_digest,
    known_index,
    remember_index,
    split_metadata,
    unique_pairs,
    validated_data_end,
    whole_header,
)

try:  # optional (requirements.txt lists it): the fast parse of a new tensor index, see _loads_index
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - the standard library's json then
    _orjson_loads = None

MAX_HEADER_BYTES = 100 * 1024 * 1024
MAX_TENSORS = 12_000  # real LoRAs hold < 6,000 (full-layer LyCORIS on SDXL with both text encoders, DoRA)
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"}


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
    tensors_read: bool = True  # False: the index is one validated before and the caller asked not to parse it


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


def read_structure(path: str | os.PathLike[str], *,
                   index_known: Callable[[bytes], bool] | None = None) -> FileStructure:
    """Read a LoRA file's tensor index and metadata from its header only.

    ``index_known(digest)`` True: the caller already knows what it needs of that tensor index; if the index was
    validated before (same bytes around the metadata, a file size that fits it), ``tensors`` is left empty and
    ``tensors_read`` False: the header is read, its metadata decoded and checked, the index neither parsed nor
    validated again.

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
    tensors, metadata, digest = _open_header(shown, buf, min(got, n), n, st.st_size, index_known)
    return FileStructure(path=p, size=st.st_size, header_bytes=8 + n, mtime_ns=st.st_mtime_ns,
                         tensors=tensors if tensors is not None else {}, metadata=metadata, index_digest=digest,
                         tensors_read=tensors is not None)


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
    # a plausible header length followed by a JSON object is safetensors, whatever its length bytes look like
    # (a header of 0x480 bytes starts ``80 04``, as a pickle does): the sniff names only what fails this check
    plausible = len(head) >= 9 and struct.unpack("<Q", head[:8])[0] <= MAX_HEADER_BYTES and head[8:9] == b"{"
    what = None if plausible else _describe_start(head)
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




def _open_header(shown: str, buf: bytearray, got: int, n: int, size: int,
                 index_known: Callable[[bytes], bool] | None) -> tuple[dict[str, TensorInfo] | None, dict[str, str], bytes]:
    """Index the JSON header ``buf[:got]`` (``n`` bytes long by the file's own count). A tensor index seen before
    (same keys, shapes, dtypes, offsets: one trainer's files) is reused after checking the file size; a new one is
    parsed without its metadata value, which ``split_metadata`` decoded already (see :func:`_parse_index`), and
    validated by :func:`_validated_index`. Duplicated keys and more than ``MAX_TENSORS`` tensors are refused. An index
    validated before whose digest ``index_known`` accepts gives None for the tensors (see read_structure)."""
    split = split_metadata(buf, got)
    known = known_index(buf, split) if split.meta is not None else None
    if known is not None and size == 8 + n + known.data_end:
        return known.tensors, split.meta, known.digest
    digest = known.digest if known is not None else index_digest(buf, split)
    if index_known is not None and split.meta is not None and index_known(digest) and \
            validated_data_end(digest) == size - 8 - n:
        return None, split.meta, digest
    count = buf.count(b'"data_offsets"', 0, split.pos) + buf.count(b'"data_offsets"', split.end, got)  # ≥ tensors
    if count > MAX_TENSORS:
        raise CorruptFile(f"{shown}: the header lists about {count:,} tensors (limit {MAX_TENSORS:,}); no LoRA has "
                          "that many, so this file is damaged or not a LoRA. Replace it with the real file.")
    prefix, suffix = bytes(buf[:split.pos]), bytes(buf[split.end:split.tail])
    index, meta = _parse_index(shown, buf, got, split, prefix, suffix)
    if meta is not split.meta:  # the split could not be trusted: the digest covers the whole header
        digest = index_digest(buf, whole_header(got))
    tensors, data_end = _validated_index(shown, index, size - 8 - n)
    if meta is split.meta:
        remember_index(KnownIndex(tensors, data_end, prefix, suffix, digest))
    return tensors, meta, digest


def _parse_index(shown: str, buf: bytearray, got: int, split: HeaderSplit, prefix: bytes,
                 suffix: bytes) -> tuple[dict[str, Any], dict[str, str]]:
    """The header's tensor entries and its metadata. Fast path: the header with its metadata value left out (that
    value was decoded by ``split_metadata``, duplicated keys refused) parsed by plain ``json.loads``, whose dicts
    keep the last of a duplicated key: the text must then hold no double quote the result does not account for
    (see :func:`_no_duplicated_keys`). Anything else, or a split
    that cannot be trusted, takes the strict parse of the whole header (``split.meta`` is then not returned)."""
    if split.meta is not None:
        text = prefix + (b'"__metadata__":{}' if split.end > split.pos else b"") + suffix
        try:
            index = _loads_index(text)
        except (ValueError, RecursionError):  # (anything the strict parse below must judge)
            index = None
        if isinstance(index, dict) and _no_duplicated_keys(text, index, split.end > split.pos) and \
                (_orjson_loads is not None or b"\\u" not in text or not has_lone_surrogate(index)):
            return index, split.meta
    header = _loads_header(shown, bytes(buf[:got]))
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CorruptFile(f"{shown}: damaged safetensors header: __metadata__ must map names to strings "
                          "(the file is damaged or not safetensors).")
    return header, meta


def _loads_index(text: bytes) -> Any:
    """A tensor index's JSON: by orjson when it is installed (twice the standard library's speed on these headers,
    half of the cost of a first file of an index), else by json (from str: bytes would let json guess UTF-16 or
    UTF-32). The parsers differ only on what the strict parse judges anyway: orjson refuses NaN, integers beyond 64
    bits, lone surrogates and nesting beyond 1,024, which then take that parse (tests/test_header_validation.py
    holds both to the safetensors library's verdicts)."""
    if _orjson_loads is not None:
        return _orjson_loads(text)
    return json.loads(text.decode("utf-8"))


def _no_duplicated_keys(text: bytes, index: dict[str, Any], has_metadata: bool) -> bool:
    """True when ``text`` (the JSON of ``index``) cannot hold a key twice. The entries must hold three keys each on
    average (the validation then requires dtype, shape and data_offsets in each, so exactly those, with a string
    dtype and integer lists), so the parsed result accounts for ``2·len(index) + 8·entries`` double quotes: the names,
    the entry keys and the dtype strings. A key written twice, parsed once, adds quotes the result does not account
    for, which nothing can hide (an escaped quote in a name adds some too: the strict parse then decides)."""
    entries = len(index) - (1 if "__metadata__" in index else 0)
    if ("__metadata__" in index) != has_metadata:
        return False
    try:  # (the metadata placeholder {} adds nothing)
        if sum(map(len, index.values())) != 3 * entries:
            return False
    except TypeError:  # an entry that is a number: the strict parse says what is wrong
        return False
    return text.count(b'"') == 2 * len(index) + 8 * entries


def _loads_header(shown: str, raw: bytes) -> dict[str, Any]:
    """The header JSON (a memory-bounded part of it, see _open_header), refusing a key written twice: Python's json
    keeps the last one silently, so the file would mean one thing to us and maybe another to its next reader."""
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=unique_pairs)
    except DuplicateKey as exc:
        raise CorruptFile(f"{shown}: the header holds the key {str(exc)[:200]!r} twice; readers disagree on which one "
                          "counts, so the file is refused. Re-save it from its source.") from None
    except (ValueError, RecursionError) as exc:
        raise CorruptFile(f"{shown}: damaged safetensors header: {_explain(f'invalid JSON ({exc})')}") from None
    if not isinstance(header, dict):
        raise CorruptFile(f"{shown}: damaged safetensors header: {_explain('invalid JSON: not an object')}")
    if b"\\u" in raw and has_lone_surrogate(header):
        raise CorruptFile(f"{shown}: damaged safetensors header: a string holds a lone UTF-16 surrogate (an escape "
                          "from \\ud800 to \\udfff without its pair), which is not text; the file is damaged or "
                          "was not written by a safetensors library.")
    return header


def _validated_index(shown: str, header: dict[str, Any], data_len: int) -> tuple[dict[str, TensorInfo], int]:
    """The tensor entries, with the checks the safetensors library makes when it opens a file: known dtypes,
    non-negative integer shapes and offsets, byte lengths that fit dtype × shape, offsets that tile the data region
    exactly. (The library parses the header too but exposes no offsets, and a second parse of every new header
    cost as much as the rest of indexing it; tests/test_header_validation.py holds this to the library's verdict
    on damaged headers.)"""
    def damaged(why: str) -> CorruptFile:
        return CorruptFile(f"{shown}: damaged safetensors header: {why}")

    tensors: dict[str, TensorInfo] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            dtype = shape = start = end = None
        ok = type(dtype) is str and type(shape) is list and type(start) is int and type(end) is int and start >= 0
        numel = 1
        for d in shape if ok else ():
            if type(d) is not int or d < 0:
                ok = False
                break
            numel *= d
        if not ok:
            raise damaged(f"tensor {key[:200]!r} is not described by dtype, shape and data_offsets "
                          "(the file is damaged or not safetensors).")
        width = DTYPE_BYTES.get(dtype)
        if width is None:
            raise damaged(_explain(f"unknown variant {dtype[:40]!r} for tensor {key[:200]!r}"))
        if end < start or numel * width != end - start:
            raise damaged(f"tensor {key[:200]!r}: {dtype} {shape} does not fit its {end - start:,} bytes "
                          "(the file is damaged).")
        tensors[key] = TensorInfo(key, dtype, tuple(shape), start, end)
    at = _tiled_end(tensors.values())  # most writers list the tensors in data order: one pass, no sort
    if at is None:
        at = 0
        for info in sorted(tensors.values(), key=_by_offsets):
            if info.start != at:
                raise damaged(_explain(f"invalid offset for tensor {info.key[:200]!r}"))
            at = info.end
    if at != data_len:
        raise damaged(_explain(f"metadata incomplete buffer: the tensors end at {at:,} of {data_len:,} data bytes"))
    return tensors, at


_by_offsets = attrgetter("start", "end")


def _tiled_end(infos: Iterable[TensorInfo]) -> int | None:
    """Where the data ends if ``infos`` tile it in the order given, without gaps or overlaps (None: they do not)."""
    at = 0
    for info in infos:
        if info.start != at:
            return None
        at = info.end
    return at


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
