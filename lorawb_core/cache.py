"""A process-wide LRU of loaded LoRA state dicts, bounded in bytes.

Keyed by the file's path, mtime and size, so an edited file is never served stale. The loader is injectable: inside
ComfyUI the nodes pass ``comfy.utils.load_torch_file(path, safe_load=True)``; standalone the default reads the file
with ``safetensors`` (never unpickling). ``LORAWB_CACHE_MB`` sets the budget (default 2048 MB; 0 disables caching).
One entry larger than the budget is returned but not kept.

>>> cache = default_cache()                      # doctest: +SKIP
>>> sd = cache.get("/loras/style.safetensors")   # loads, or returns the cached dict
>>> cache.stats().to_dict()                      # doctest: +SKIP
{'entries': 1, 'bytes': 9437184, 'budget_bytes': 2147483648, 'hits': 0, 'misses': 1, 'evictions': 0, ...}
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from .errors import UnreadableFile

DEFAULT_BUDGET_MB = 2048
Loader = Callable[[str], dict[str, Any]]


@dataclass(frozen=True)
class CacheKey:
    path: str
    mtime_ns: int
    size: int


@dataclass
class CacheStats:
    entries: int
    bytes: int
    budget_bytes: int
    hits: int
    misses: int
    evictions: int
    loads_failed: int
    paths: list[str]

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hit_rate"] = self.hit_rate
        return d


def _safetensors_loader(path: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(path, device="cpu")


def state_dict_bytes(sd: dict[str, Any]) -> int:
    """Bytes held by a state dict's tensors (shared storages counted once)."""
    seen: set[int] = set()
    total = 0
    for t in sd.values():
        try:
            storage = t.untyped_storage()
        except AttributeError:  # not a tensor (metadata tuple members, numbers)
            continue
        if storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        total += storage.nbytes()
    return total


def budget_from_env() -> int:
    raw = os.environ.get("LORAWB_CACHE_MB", "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_BUDGET_MB
    except ValueError:
        mb = DEFAULT_BUDGET_MB
    return max(0, int(mb * 1024 * 1024))


class LoraCache:
    """Thread-safe LRU of state dicts with a byte budget and hit/miss/eviction counters.

    Concurrent ``get`` calls for the same file load it once (the others wait for that load).
    """

    def __init__(self, budget_bytes: int | None = None, loader: Loader | None = None) -> None:
        self.budget_bytes = budget_from_env() if budget_bytes is None else max(0, int(budget_bytes))
        self.loader = loader or _safetensors_loader
        self._items: OrderedDict[CacheKey, tuple[dict[str, Any], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._loading: dict[CacheKey, threading.Event] = {}
        self.hits = self.misses = self.evictions = self.loads_failed = 0

    @staticmethod
    def key_for(path: str | os.PathLike[str]) -> CacheKey:
        p = os.path.abspath(os.fspath(path))
        try:
            st = os.stat(p)
        except OSError as exc:
            raise UnreadableFile(f"{p}: cannot read the LoRA file ({exc.strerror or exc}); rescan the library if it "
                                 "was moved or deleted.") from None
        return CacheKey(p, st.st_mtime_ns, st.st_size)

    def get(self, path: str | os.PathLike[str], loader: Loader | None = None) -> dict[str, Any]:
        """The state dict of ``path``: from the cache when the file is unchanged, else loaded (and cached)."""
        key = self.key_for(path)
        while True:
            with self._lock:
                item = self._items.get(key)
                if item is not None:
                    self._items.move_to_end(key)
                    self.hits += 1
                    return item[0]
                pending = self._loading.get(key)
                if pending is None:
                    self.misses += 1
                    event = self._loading[key] = threading.Event()
                    break
            pending.wait()
        try:
            sd = (loader or self.loader)(key.path)
            self._put(key, sd)  # before waking the waiters, so they find it
        except BaseException:
            with self._lock:
                self.loads_failed += 1
            raise
        finally:
            with self._lock:
                self._loading.pop(key, None)
            event.set()
        return sd

    def _put(self, key: CacheKey, sd: dict[str, Any]) -> None:
        size = state_dict_bytes(sd)
        with self._lock:
            stale = [k for k in self._items if k.path == key.path and k != key]  # older versions of the file
            for k in stale:
                self._drop(k)
            if size > self.budget_bytes:
                return
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (sd, size)
            self._bytes += size
            while self._bytes > self.budget_bytes and self._items:
                self._drop(next(iter(self._items)))
                self.evictions += 1

    def _drop(self, key: CacheKey) -> None:
        _, size = self._items.pop(key)
        self._bytes -= size

    def preload(self, paths: Iterable[str | os.PathLike[str]], loader: Loader | None = None) -> list[str]:
        """Load ``paths`` into the cache; returns the problems met (one sentence each), never raises for a file."""
        problems = []
        for p in paths:
            try:
                self.get(p, loader)
            except Exception as exc:  # noqa: BLE001 - a preload list must not stop at one bad file
                problems.append(f"{os.fspath(p)}: {exc}")
        return problems

    def clear(self) -> int:
        """Drop every entry (the counters stay); returns how many were dropped."""
        with self._lock:
            n = len(self._items)
            self._items.clear()
            self._bytes = 0
            return n

    def __contains__(self, path: object) -> bool:
        try:
            key = self.key_for(path)  # type: ignore[arg-type]
        except UnreadableFile:
            return False
        with self._lock:
            return key in self._items

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(entries=len(self._items), bytes=self._bytes, budget_bytes=self.budget_bytes,
                              hits=self.hits, misses=self.misses, evictions=self.evictions,
                              loads_failed=self.loads_failed, paths=[k.path for k in self._items])


_default: LoraCache | None = None
_default_lock = threading.Lock()


def default_cache() -> LoraCache:
    """The process-wide cache (budget from ``LORAWB_CACHE_MB``)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = LoraCache()
        return _default


def preload_ids_from_env() -> list[str]:
    """Stable IDs listed in ``LORAWB_PRELOAD`` (comma or space separated), upper-cased."""
    raw = os.environ.get("LORAWB_PRELOAD", "")
    return [part.strip().upper() for part in raw.replace(",", " ").split() if part.strip()]
