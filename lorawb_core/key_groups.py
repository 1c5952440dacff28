"""Grouping tensor keys into modules: ``<module key><param suffix>`` → module key + canonical param name.

Every naming of a parameter found in the wild (kohya, PEFT, old diffusers processors, XLabs, LyCORIS, Mochi-style
bare ``lora_A``) maps to one canonical param name; adapters only ever see canonical names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from .bounded_lru import BoundedLru

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


@dataclass(eq=False, slots=True)  # (not frozen: a new key set builds hundreds; nothing assigns to one after)
class ModulePlan:
    """One module of a grouping plan: its key and, per canonical param, the tensor key that holds it."""

    key: str
    params: tuple[tuple[str, str], ...]  # (canonical param, tensor key), in the order grouping found them
    names: tuple[str, ...]  # the canonical params alone
    tensor_keys: tuple[str, ...]  # the tensor keys alone


@dataclass(frozen=True, eq=False)
class GroupingPlan:
    """How the keys of one tensor index group into modules: a function of the key sequence alone, shared by every
    index with those keys (one trainer's files at other ranks, dtypes or offsets)."""

    modules: tuple[ModulePlan, ...]
    unknown_keys: tuple[str, ...]  # sorted


def plan_grouping(keys: Iterable[str]) -> GroupingPlan:
    """Group tensor keys into modules (see the module docstring); generic params (``weight``, ``bias``, ``scale``)
    join a module only when something else says what the module is, and a second spelling of a param is unknown."""
    modules: dict[str, dict[str, str]] = {}
    unknown: list[str] = []
    generic: list[tuple[str, str, str]] = []
    for key in keys:
        split = split_key(key)
        if split is None:
            unknown.append(key)
            continue
        module, param = split
        if param in _GENERIC:
            generic.append((module, param, key))
            continue
        params = modules.get(module)
        if params is None:
            modules[module] = {param: key}
        elif param in params:  # two spellings of the same param in one module
            unknown.append(key)
        else:
            params[param] = key
    for module, param, key in generic:
        params = modules.get(module)
        if params is None:
            unknown.append(key)
        else:
            params.setdefault(param, key)
    return GroupingPlan(modules=tuple(ModulePlan(m, tuple(ps.items()), tuple(ps), tuple(ps.values()))
                                      for m, ps in modules.items()),
                        unknown_keys=tuple(sorted(unknown)))


# a plan costs a few hundred bytes per module: at most 512 plans and 150,000 modules (a scan worker of the 1,000-layout
# bench grows by ~12 MB with them)
_PLANS = BoundedLru[tuple[str, ...], GroupingPlan](entries=512, weight_limit=150_000,
                                                      weight=lambda plan: len(plan.modules) + len(plan.unknown_keys))


def grouping_plan(keys: tuple[str, ...]) -> GroupingPlan:
    """:func:`plan_grouping` of ``keys``, cached by the key sequence (bounded in plans and in modules)."""
    plan = _PLANS.get(keys)
    return plan if plan is not None else _PLANS.put(keys, plan_grouping(keys))

