"""Exact per-block weights for diffusers: pre-scale the one factor of each module that ΔW is linear in.

Every module of a LoRA file is assigned its block by *our* naming and layout registry (the same code the ComfyUI
nodes use), from the file's own keys; diffusers only ever sees a state dict it loads with ``load_lora_weights``.
For a module in block *b* the factor ``w(b)`` multiplies:

============  =========================  ====================================
algorithm     ΔW                          scaled tensor(s)
============  =========================  ====================================
lora, locon   up · down (· mid)           ``up`` (and ``up_bias``)
loha          (w1a·w1b) ⊙ (w2a·w2b)       ``hada_w1_a``
lokr          w1 ⊗ w2                     ``lokr_w1`` (or ``lokr_w1_a``)
full          diff                        ``diff`` and ``diff_b``
============  =========================  ====================================

so the patched weight is exactly ``W + s·w(b)·ΔW`` (alpha untouched). DoRA re-normalises the whole weight, so a
DoRA module takes only weight 1 (else it is refused); modules outside every block keep weight 1.

>>> plan_scale_keys({"m": ("lora", "IN04", {"up": "m.lora_up.weight"}, False)}, {"IN04": 0.5})
{'m.lora_up.weight': 0.5}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import UsageError

SCALED: dict[str, tuple[tuple[str, ...], ...]] = {
    # algorithm -> alternatives: the first whose params are present is scaled (all of its params)
    "lora": (("up", "up_bias"),), "locon": (("up", "up_bias"),), "loha": (("hada_w1_a",),),
    "lokr": (("lokr_w1",), ("lokr_w1_a",)), "full": (("diff", "diff_b"),),
}

ModuleFacts = tuple[str, "str | None", Mapping[str, str], bool]  # algorithm, block, param -> tensor key, decomposed


def module_facts(analysis) -> dict[str, ModuleFacts]:
    """Per module of an :class:`~lorawb_core.inspection.structure.Analysis`: algorithm, block, tensor keys, DoRA or not."""
    out = {}
    for m in analysis.modules:
        a = m.adapter
        out[a.module] = (a.name, m.block, {p: t.key for p, t in a.params.items()}, a.decomposed)
    return out


def plan_scale_keys(facts: Mapping[str, ModuleFacts], weights: Mapping[str, float]) -> dict[str, float]:
    """Tensor key → factor for every module whose block weight is not 1 (the plan; nothing is changed).

    Raises:
        UsageError: a module whose algorithm is not linear in one factor (DoRA, OFT, (IA)³, GLoRA) would need a
            weight other than 1.
    """
    plan: dict[str, float] = {}
    for module, (algorithm, block, keys, decomposed) in facts.items():
        w = 1.0 if block is None else float(weights.get(block, 0.0))
        if w == 1.0:
            continue
        choices = SCALED.get(algorithm)
        if decomposed or choices is None:
            kind = "DoRA" if decomposed else algorithm
            raise UsageError(f"block {block} has weight {w:g} but module {module} is {kind}, whose ΔW is not linear in "
                             "one factor, so a block weight cannot be applied exactly; give that block weight 1 (or "
                             "use the whole-LoRA strength).")
        for params in choices:
            if params[0] in keys:
                for p in params:
                    if p in keys:
                        plan[keys[p]] = w
                break
    return plan


def scaled_state_dict(sd: Mapping[str, Any], plan: Mapping[str, float]) -> dict[str, Any]:
    """A new dict over ``sd``'s tensors with the planned ones replaced by scaled copies (``sd`` — a cache entry —
    is never modified). Keys missing from ``sd`` are an error: the plan and the file disagree."""
    out = dict(sd)
    for key, factor in plan.items():
        if key not in out:
            raise UsageError(f"tensor {key} of the plan is not in the loaded state dict; the file changed while it was "
                             "being applied: try again.")
        t = out[key]
        out[key] = t * factor if t.dtype.itemsize >= 4 else (t.float() * factor).to(t.dtype)  # fp16/bf16 via fp32
    return out
