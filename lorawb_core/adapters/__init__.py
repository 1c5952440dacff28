"""One adapter class per algorithm, in one ordered registry (the probe order: first claim wins)."""

from __future__ import annotations

from ..reader import TensorInfo
from .base import COMMON_EXTRAS, Adapter, Energy, effective_rank
from .full import FullAdapter
from .glora import GloraAdapter
from .ia3 import Ia3Adapter
from .loha import LohaAdapter
from .lokr import LokrAdapter
from .lora import LoConAdapter, LoraAdapter
from .norm import NormAdapter
from .oft import BoftAdapter, OftAdapter

ADAPTERS: list[type[Adapter]] = [
    LoraAdapter,
    LoConAdapter,
    LohaAdapter,
    LokrAdapter,
    GloraAdapter,
    OftAdapter,
    BoftAdapter,
    Ia3Adapter,
    FullAdapter,
    NormAdapter,
]
ALGORITHMS = [a.name for a in ADAPTERS]


def probe_module(module: str, params: dict[str, TensorInfo]) -> tuple[Adapter | None, list[str]]:
    """The first adapter that claims the module, and the tensor keys it left unexplained."""
    for cls in ADAPTERS:
        adapter = cls.probe(module, params)
        if adapter is not None:
            leftover = [info.key for p, info in params.items() if p not in adapter.params]
            return adapter, leftover
    return None, [info.key for info in params.values()]


__all__ = ["ADAPTERS", "ALGORITHMS", "COMMON_EXTRAS", "Adapter", "Energy", "effective_rank", "probe_module"]
