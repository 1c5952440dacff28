"""Grouping tensor keys into modules: ``<module key><param suffix>`` → module key + canonical param name.

Every naming of a parameter found in the wild (kohya, PEFT, old diffusers processors, XLabs, LyCORIS, Mochi-style
bare ``lora_A``) maps to one canonical param name; adapters only ever see canonical names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from .reader import TensorInfo

# suffix -> canonical param. Matched longest first, so ".lora_up.weight" wins over ".up.weight".
PARAM_SUFFIXES: dict[str, str] = {
    ".lora_up.weight": "up", ".lora_down.weight": "down", ".lora_mid.weight": "mid",
    ".lora_B.weight": "up", ".lora_A.weight": "down", ".lora_B.default.weight": "up", ".lora_A.default.weight": "down",
    ".lora_B": "up", ".lora_A": "down", ".lora_B.bias": "up_bias",
    ".lora.up.weight": "up", ".lora.down.weight": "down",  # diffusers LoRACompatibleLinear era
    "_lora.up.weight": "up", "_lora.down.weight": "down",  # diffusers attention-processor era (to_q_lora, USO qkv_lora)
    ".lora_linear_layer.up.weight": "up", ".lora_linear_layer.down.weight": "down",  # transformers TE era
    ".up.weight": "up", ".down.weight": "down",  # XLabs processors
    ".alpha": "alpha", ".dora_scale": "dora_scale",
    ".lora_magnitude_vector": "magnitude", ".lora_magnitude_vector.weight": "magnitude",
    ".lora_magnitude_vector.default.weight": "magnitude", ".lora_magnitude_vector.default": "magnitude",
    ".hada_w1_a": "hada_w1_a", ".hada_w1_b": "hada_w1_b", ".hada_w2_a": "hada_w2_a", ".hada_w2_b": "hada_w2_b",
    ".hada_t1": "hada_t1", ".hada_t2": "hada_t2",
    ".lokr_w1": "lokr_w1", ".lokr_w1_a": "lokr_w1_a", ".lokr_w1_b": "lokr_w1_b",
    ".lokr_w2": "lokr_w2", ".lokr_w2_a": "lokr_w2_a", ".lokr_w2_b": "lokr_w2_b", ".lokr_t1": "lokr_t1", ".lokr_t2": "lokr_t2",
    ".oft_blocks": "oft_blocks", ".oft_diag": "oft_diag", ".rescale": "rescale", ".oft_R.weight": "oft_r",
    ".a1.weight": "a1", ".a2.weight": "a2", ".b1.weight": "b1", ".b2.weight": "b2", ".bm.weight": "bm",
    ".diff": "diff", ".diff_b": "diff_b", ".w_norm": "w_norm", ".b_norm": "b_norm",
    ".on_input": "on_input", ".weight": "weight", ".bias": "bias", ".scale": "scale",
    ".reshape_weight": "reshape_weight", ".set_weight": "set_weight",
}
_SUFFIXES_LONGEST_FIRST = sorted(PARAM_SUFFIXES, key=len, reverse=True)
# Generic suffixes only count as params when the module also has something that says what it is.
_GENERIC = {"weight", "bias", "scale"}


@dataclass
class RawModule:
    """All tensors that belong to one module key, by canonical param name."""

    key: str
    params: dict[str, TensorInfo] = field(default_factory=dict)


@dataclass
class KeyGrouping:
    modules: dict[str, RawModule]
    unknown_keys: list[str]  # keys no suffix explains (reported, never dropped)


_DOT_SUFFIXES = {s: p for s, p in PARAM_SUFFIXES.items() if s.startswith(".")}
_UNDERSCORE_SUFFIXES = [s for s in _SUFFIXES_LONGEST_FIRST if not s.startswith(".")]
_MAX_PARTS = max(s.count(".") for s in PARAM_SUFFIXES)


@lru_cache(maxsize=1 << 16)  # tensor keys repeat across the files of a family whatever their ranks
def split_key(key: str) -> tuple[str, str] | None:
    """``'a.b.lora_up.weight'`` → ``('a.b', 'up')``; None when no known parameter suffix matches.

    Dotted suffixes are found by dictionary look-ups of the last 1–4 dotted parts, longest first (hot path: a
    large LoRA has thousands of keys).
    """
    for suffix in _UNDERSCORE_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], PARAM_SUFFIXES[suffix]
    pos = len(key)
    cuts = []
    for _ in range(_MAX_PARTS):
        pos = key.rfind(".", 0, pos)
        if pos <= 0:
            break
        cuts.append(pos)
    for pos in reversed(cuts):
        param = _DOT_SUFFIXES.get(key[pos:])
        if param is not None:
            return key[:pos], param
    return None


def group_keys(tensors: dict[str, TensorInfo]) -> KeyGrouping:
    modules: dict[str, RawModule] = {}
    unknown: list[str] = []
    generic: list[tuple[str, str, TensorInfo]] = []
    for key, info in tensors.items():
        split = split_key(key)
        if split is None:
            unknown.append(key)
            continue
        module, param = split
        if param in _GENERIC:
            generic.append((module, param, info))
            continue
        mod = modules.get(module)
        if mod is None:
            mod = modules[module] = RawModule(module)
        if param in mod.params:  # two spellings of the same param in one module
            unknown.append(key)
            continue
        mod.params[param] = info
    for module, param, info in generic:
        mod = modules.get(module)
        if mod is None:
            unknown.append(info.key)
        else:
            mod.params.setdefault(param, info)
    return KeyGrouping(modules=modules, unknown_keys=sorted(unknown))
