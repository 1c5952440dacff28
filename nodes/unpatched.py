"""Modules the host maps to a weight but turns into no patch: (IA)³ applied by us, the rest named with the reason.

``comfy.lora.load_lora`` returns no patch for a module whose tensors none of its weight adapters reads — (IA)³ on
every ComfyUI, OFT/BOFT on the 2024 copy, any algorithm newer than the host — and only logs the keys. Nothing may
vanish without a word, so every such module is listed in the apply report with why, except (IA)³, which we apply
exactly: W' = W ⊙ (1 + s·w) with ``w`` broadcast along the output rows (the input columns when ``on_input``), i.e. a
``("diff", (W ⊙ w,))`` patch at strength ``s`` computed from the model's own unpatched weight — the patch type both
hosts apply as ``W + s·diff``. A module patched without one of its tensors is named too: the 2024 copy reads no
``dora_scale``, so a DoRA file there is applied as its plain LoRA, and the report says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lorawb_core.adapters import ADAPTERS
from lorawb_core.apply import patch_target
from lorawb_core.key_groups import split_key


@dataclass
class Unpatched:
    """What became of the modules the host mapped but did not patch."""

    ia3: list[str] = field(default_factory=list)  # applied by us as W ⊙ w differences
    dropped: dict[str, list[str]] = field(default_factory=dict)  # reason → modules left out
    partial: dict[str, list[str]] = field(default_factory=dict)  # reason → modules patched without some tensor

    def lines(self) -> list[str]:
        out = []
        if self.ia3:
            out.append(f"  (IA)³: {len(self.ia3)} modules applied by lorawb as exact differences W⊙w from the model's "
                       "own weights (this ComfyUI has no (IA)³ adapter)")
        for reason, modules in self.dropped.items():
            out.append(f"  not applied: {len(modules)} modules — {reason}; e.g. {', '.join(modules[:3])}")
        for reason, modules in self.partial.items():
            out.append(f"  applied in part: {len(modules)} modules — {reason}; e.g. {', '.join(modules[:3])}")
        return out


def _params(lora_sd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    by_module: dict[str, dict[str, Any]] = {}
    for key, tensor in lora_sd.items():
        split = split_key(key)
        if split is not None:
            by_module.setdefault(split[0], {})[split[1]] = tensor
    return by_module


def _algorithm(params: dict[str, Any]) -> str | None:
    for cls in ADAPTERS:
        try:
            if cls.claims(params):
                return cls.name
        except (AttributeError, IndexError, KeyError, TypeError):
            continue
    return None


def _patched(target: Any, patches: dict[Any, Any]) -> bool:
    if target in patches:
        return True
    return isinstance(target, str) and target.endswith(".weight") and f"{target[:-7]}.bias" in patches


def _holds(patch: Any, tensor: Any) -> bool:
    """Whether a host patch (a tuple of the 2024 copy or an adapter object of current ComfyUI) carries ``tensor``."""
    stack = [getattr(patch, "weights", patch)]
    while stack:
        item = stack.pop()
        if isinstance(item, (tuple, list)):
            stack.extend(item)
        elif item is tensor or (hasattr(item, "data_ptr") and item.data_ptr() == tensor.data_ptr()
                                and item.shape == tensor.shape):
            return True
    return False


def base_weight(patcher: Any, key: str):
    """The model's own (unpatched) float32 weight for ``key``: the patcher's backup when the patched weight is in
    place, else the live parameter; current ComfyUI's conversion (e.g. scaled fp8) applied."""
    import comfy.utils
    import torch

    backup = getattr(patcher, "backup", {}).get(key)
    if backup is not None:
        weight = getattr(backup, "weight", backup)
    else:
        weight = comfy.utils.get_attr(patcher.model, key)
    convert = None
    try:
        from comfy.model_patcher import get_key_weight

        convert = get_key_weight(patcher.model, key)[2]
    except (ImportError, AttributeError, KeyError):
        pass
    weight = weight.detach().to(torch.float32, copy=True)
    return convert(weight, inplace=True) if convert is not None else weight


def _ia3_diff(params: dict[str, Any], weight) -> tuple[Any, str]:
    """``W ⊙ w`` (float32) for one (IA)³ module, or ``(None, reason)`` when the vector does not fit the weight."""
    import torch

    w = params["weight"].detach().to(torch.float32).reshape(-1)
    axis = 1 if float(params["on_input"]) != 0 else 0
    if weight.ndim < axis + 1 or weight.shape[axis] != w.numel():
        return None, (f"(IA)³ vector of {w.numel()} values does not fit the weight's "
                      f"{'input' if axis else 'output'} axis ({tuple(weight.shape)})")
    shape = [1] * weight.ndim
    shape[axis] = -1
    return weight * w.reshape(shape), ""


def resolve_unpatched(lora_sd: dict[str, Any], key_map: dict[str, Any], patches: dict[Any, Any],
                      modules: frozenset[str], base_of: Callable[[str], Any]) -> Unpatched:
    """Add (IA)³ patches to ``patches`` (in place) and name every other mapped module the host left without one.

    ``base_of(target)`` gives the unpatched weight of a model key (or ``None`` when no side holds it)."""
    result = Unpatched()
    params = _params(lora_sd) if any(k.endswith(".dora_scale") for k in lora_sd) else None
    for module, p in (params or {}).items():
        patch = patches.get(key_map.get(module))
        if "dora_scale" in p and patch is not None and not _holds(patch, p["dora_scale"]):
            result.partial.setdefault("this ComfyUI ignores the DoRA magnitude (dora_scale): the plain LoRA "
                                      "direction was applied, not the DoRA result", []).append(module)
    missing = sorted(m for m in modules if m in key_map and not _patched(key_map[m], patches))
    if not missing:
        return result
    params = params or _params(lora_sd)
    for module in missing:
        p = params.get(module, {})
        algo = _algorithm(p)
        reason = None
        if algo == "ia3":
            target = key_map[module]
            weight = base_of(patch_target(target))
            if weight is None:
                reason = "(IA)³ module whose weight is in neither the model nor the text encoder given"
            else:
                if isinstance(target, tuple):  # a slice of a fused weight: (key, (dim, start, length))
                    weight = weight.narrow(*target[1])
                diff, reason = _ia3_diff(p, weight)
                if diff is not None:
                    patches[target] = ("diff", (diff,))
                    result.ia3.append(module)
                    continue
        if reason is None:
            what = algo.upper() if algo else "unknown algorithm"
            reason = (f"{what}: this ComfyUI turns its tensors ({', '.join(sorted(p)) or 'none'}) into no patch; "
                      "a newer ComfyUI may support it")
        result.dropped.setdefault(reason, []).append(module)
    return result
