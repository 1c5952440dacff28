"""Tensor indexes seen before, and the split of a header around its ``__metadata__`` value.

Files of one trainer share their tensor index (keys, shapes, dtypes, offsets) and differ only in metadata: a header
whose bytes around the metadata equal a known index's is that index, found with two ``memcmp`` instead of a parse.
The cache is bounded in entries and in tensors, whatever the library holds.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

DTYPE_BYTES = {  # element sizes of every safetensors dtype (the reader validates byte lengths with them)
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "C64": 8, "F64": 8, "I64": 8, "U64": 8,
}


@dataclass(slots=True, unsafe_hash=True)  # not frozen: a frozen dataclass costs 4x more to build (hot path:
class TensorInfo:  # a new index builds one per tensor); nothing assigns to one after it is built
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


@dataclass(frozen=True)
class KnownIndex:
    tensors: dict[str, TensorInfo]
    data_end: int
    prefix: bytes  # the header before its metadata ...
    suffix: bytes  # ... and after it, without trailing padding: compared byte for byte with a new file's
    digest: bytes  # digest of prefix + suffix: identifies the index (the analysis cache key)


# Tensor indexes seen before, by digest; ``_CANDIDATES`` finds them by where the metadata sits and the length of
# the rest, so a known index costs two ``memcmp`` of the header instead of a digest, a parse or a copy.
_INDEX_CACHE: OrderedDict[bytes, KnownIndex] = OrderedDict()
_CANDIDATES: dict[tuple[int, int], list[bytes]] = {}
_INDEX_CACHE_SIZE = 256
_INDEX_CACHE_TENSORS = 250_000  # and at most this many tensors in all: memory bounded whatever the library holds
_cached_tensors = 0  # the tensors _INDEX_CACHE holds
# Digests of every index validated before (reader._validated_index) with where its data ends: far more
# than ``_INDEX_CACHE`` holds, at ~200 bytes each. A header whose index has one of these digests is known valid
# without its tensor index parsed again (see ``reader.read_structure(index_known=...)``).
_VALIDATED: OrderedDict[bytes, int] = OrderedDict()
_VALIDATED_SIZE = 8192
_cache_lock = threading.Lock()
_META_KEY = b'"__metadata__"'
_JSON_SPACE = b" \t\r\n"


@dataclass
class HeaderSplit:
    """A header split around its ``__metadata__`` value: ``buf[:pos]`` + ``buf[end:tail]`` is the tensor index
    (``tail`` drops trailing JSON whitespace: writers pad the header to 8 bytes, so files of one structure differ
    there by the length of their metadata). ``meta`` is None when the split cannot be trusted."""

    meta: dict[str, str] | None
    pos: int
    end: int
    tail: int


def whole_header(n: int) -> HeaderSplit:
    """The "split" of a header whose metadata cannot be told apart: its digest covers all of ``buf[:n]``."""
    return HeaderSplit(None, n, n, n)


class DuplicateKey(ValueError):
    pass


def unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` refusing a key written twice (``json`` keeps the last one silently)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        raise DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


_STRICT = json.JSONDecoder(object_pairs_hook=unique_pairs)


def split_metadata(buf: bytearray | bytes, n: int) -> HeaderSplit:
    """Find and decode the ``__metadata__`` object of the header ``buf[:n]`` without copying the header."""
    tail = n
    while tail > 0 and buf[tail - 1] in _JSON_SPACE:
        tail -= 1
    pos = _metadata_position(buf, n)
    if pos < 0:
        return HeaderSplit({}, tail, tail, tail)
    colon = buf.find(b":", pos + 14, n)
    if colon < 0 or not _valid_utf8(buf[pos:colon]):
        return HeaderSplit(None, pos, pos, tail)
    start = colon + 1
    while start < n and buf[start] in _JSON_SPACE:
        start += 1
    decoded = _decode_object(memoryview(buf)[start:n])
    if decoded is None:
        return HeaderSplit(None, pos, pos, tail)
    obj, length = decoded
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in obj.items()) or \
            buf.find(b"\\u", start, start + length) >= 0 and has_lone_surrogate(obj):
        return HeaderSplit(None, pos, pos, tail)
    return HeaderSplit(obj, pos, min(start + length, tail), tail)


def has_lone_surrogate(value: Any) -> bool:
    """True when a string in ``value`` (dict keys and values, list items, nested) holds a lone UTF-16 surrogate:
    JSON's ``\\ud800`` escapes decode to one in Python, while the safetensors library (Rust strings) refuses such
    a header. Only escapes make one (raw UTF-8 cannot), so callers look for a ``\\u`` in the bytes first."""
    strings: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            strings.append(v)
        elif isinstance(v, dict):
            strings.extend(k for k in v if isinstance(k, str))
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    try:
        "".join(strings).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


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
                obj, end = _STRICT.raw_decode(text)
            except DuplicateKey:  # the strict parse of the whole header says so
                return None
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


def index_digest(buf: bytearray | bytes, split: HeaderSplit) -> bytes:
    """The digest of the header without its metadata (``buf[:pos] + buf[end:tail]``), without copying either part."""
    h = hashlib.sha256()  # (SHA-NI: about twice the speed of blake2b here, 70 µs for a 140 KB index)
    with memoryview(buf) as view:
        h.update(view[:split.pos])
        h.update(view[split.end:split.tail])
    return h.digest()


def validated_data_end(digest: bytes) -> int | None:
    """Where the data of an index validated before ends (relative to the data region), None if unknown."""
    with _cache_lock:
        end = _VALIDATED.get(digest)
        if end is not None:
            _VALIDATED.move_to_end(digest)
        return end


def known_index(buf: bytearray | bytes, split: HeaderSplit) -> KnownIndex | None:
    key = (split.pos, split.pos + split.tail - split.end)
    with _cache_lock:
        for digest in _CANDIDATES.get(key, ()):
            known = _INDEX_CACHE.get(digest)  # None: the cache was cleared from outside
            if known is not None and buf.startswith(known.prefix) and \
                    buf.startswith(known.suffix, split.end, split.tail):
                _INDEX_CACHE.move_to_end(digest)
                return known
    return None


def remember_validated(digest: bytes, data_end: int) -> None:
    """An index validated elsewhere (another worker of the scan) whose data ends at ``data_end``."""
    with _cache_lock:
        _VALIDATED[digest] = data_end
        _VALIDATED.move_to_end(digest)
        if len(_VALIDATED) > _VALIDATED_SIZE:
            _VALIDATED.popitem(last=False)


def remember_index(index: KnownIndex) -> None:
    key = (len(index.prefix), len(index.prefix) + len(index.suffix))
    remember_validated(index.digest, index.data_end)
    with _cache_lock:
        if index.digest in _INDEX_CACHE:
            return
        _INDEX_CACHE[index.digest] = index
        digests = _CANDIDATES.setdefault(key, [])
        if index.digest not in digests:
            digests.append(index.digest)
        global _cached_tensors
        _cached_tensors = (_cached_tensors if len(_INDEX_CACHE) > 1 else 0) + len(index.tensors)  # (0: cleared)
        while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE or \
                (_cached_tensors > _INDEX_CACHE_TENSORS and len(_INDEX_CACHE) > 1):
            _, old = _INDEX_CACHE.popitem(last=False)
            _cached_tensors -= len(old.tensors)
            old_key = (len(old.prefix), len(old.prefix) + len(old.suffix))
            digests = _CANDIDATES.get(old_key, [])
            if old.digest in digests:
                digests.remove(old.digest)
            if not digests:
                _CANDIDATES.pop(old_key, None)
