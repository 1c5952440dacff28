"""Per-block schedules on ComfyUI's hooks (``comfy/hooks.py``): one WeightHook per distinct schedule.

A :class:`HookSpec` (lorawb_core.schedule_plan) becomes a ``WeightHook`` subclass that, when ComfyUI registers it on
the sampling ModelPatcher (or on a CLIP's patcher), adds the LoRA's patches of its blocks in one
``add_hook_patches`` call and then gives each stored entry ``strength × block weight`` (what one call per weight would
store, as Block Weight Apply does with ``add_patches``). The spec's keyframes become ``HookKeyframe``\\ s (percent of
the run, ``guarantee_steps=0``: the switch follows the sampler's sigmas like ComfyUI's own timestep ranges); ComfyUI
multiplies every entry of the hook by the current keyframe's strength, so a block is at ``W + s·w·ΔW`` inside its
range and exactly ``W`` outside. Patches are built once per model object and shared by every hook of one node run.
"""

from __future__ import annotations

import inspect
import logging
import threading
import weakref
from typing import Any

from lorawb_core.apply import patch_target, plan_patches
from lorawb_core.errors import HostUnsupported
from lorawb_core.schedule_plan import HookSpec

from .comfy_lora import _key_map, _load_patches

log = logging.getLogger("lorawb")
# comfy/hooks.py came in December 2024 (ComfyUI #5583, 2024-12-02), but its WeightHook.add_hook_patches took a
# `target` enum and a list of registered hooks; the form used here (`target_dict`, a HookGroup) came with "Hooks
# Part 2" (#6377, 2025-01-11, after 0.3.10 was out), first released in 0.3.11 (2025-01-16).
MIN_COMFYUI = "0.3.11"
_NAMES = ("WeightHook", "HookKeyframe", "HookKeyframeGroup", "HookGroup", "set_conds_props")


def hooks_module():
    """``comfy.hooks`` in the form this pack drives (ComfyUI 0.3.11 or newer), or :class:`HostUnsupported` naming the
    ComfyUI version to update to."""
    try:
        import comfy.hooks as hooks
    except ImportError:
        hooks = None
    if hooks is None or not all(hasattr(hooks, n) for n in _NAMES) or "target_dict" not in inspect.signature(
            hooks.WeightHook.add_hook_patches).parameters:
        what = "has no LoRA hooks (comfy/hooks.py)" if hooks is None else "has LoRA hooks of an older form"
        raise HostUnsupported(f"this ComfyUI {what}, which Block Schedule, Apply Hooks to Conditioning and "
                              f"Multi-LoRA Compose's hooks option are built on; update ComfyUI to {MIN_COMFYUI} or "
                              "newer, or use Block Weight Apply (the same weights over the whole run).")
    return hooks


class LoraSource:
    """One LoRA file's tensors, its layout and the host's patches for each model it meets (built once per model
    object, shared by the hooks of one node run and their clones)."""

    def __init__(self, lora_sd: dict[str, Any], layout_id: str, modules: frozenset[str] | None, label: str) -> None:
        self.lora_sd = lora_sd
        self.layout_id = layout_id
        self.modules = modules
        self.label = label
        self._patches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def patches(self, module: Any, clip: bool) -> dict[Any, Any]:
        """The host's patches of this LoRA that land on ``module`` (a diffusion model or a text encoder)."""
        with self._lock:
            found = self._patches.get(module)
        if found is None:
            import comfy.lora

            build = comfy.lora.model_lora_keys_clip if clip else comfy.lora.model_lora_keys_unet
            km = _key_map(module, build)
            patches, _, _, _ = _load_patches(self.lora_sd, km.lora_to_target, self.modules)
            found = {k: v for k, v in patches.items() if patch_target(k) in km.targets}
            with self._lock:
                self._patches[module] = found
        return found


_CLASS: type | None = None


def _hook_class() -> type:
    """The WeightHook subclass (defined on first use: the module must import on a ComfyUI without hooks)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    hooks = hooks_module()

    class BlockWeightHook(hooks.WeightHook):
        """A WeightHook holding some blocks of one LoRA, each at its own weight."""

        def __init__(self, strength_model: float = 1.0, strength_clip: float = 1.0) -> None:
            super().__init__(strength_model=strength_model, strength_clip=strength_clip)
            self.source: LoraSource | None = None
            self.block_weights: dict[str, float] = {}
            self.need_weight_init = False

        def add_hook_patches(self, model, model_options, target_dict, registered):
            if self.source is None or not self.should_register(model, model_options, target_dict, registered):
                return False
            clip = target_dict.get("target", None) == hooks.EnumWeightTarget.Clip
            strength = self._strength_clip if clip else self._strength_model
            patches = self.source.patches(model.model, clip)
            plan = plan_patches(list(patches), self.source.layout_id, self.block_weights, unmapped_weight=0.0)
            batch = {k: patches[k] for g in plan.groups for k in g.keys}
            if batch and strength != 0:
                weight_of = {patch_target(k): g.weight for g in plan.groups for k in g.keys}
                stored = model.hook_patches.get(self.hook_ref, {})
                before = {t: len(stored.get(t, ())) for t in weight_of}
                model.add_hook_patches(hook=self, patches=batch, strength_patch=1.0)
                stored = model.hook_patches.get(self.hook_ref, {})
                for target, start in before.items():
                    entries = stored.get(target, [])
                    for i in range(start, len(entries)):
                        entries[i] = (strength * weight_of[target], *entries[i][1:])
            registered.add(self)
            return True

        def clone(self):
            c = super().clone()
            c.source = self.source
            c.block_weights = self.block_weights
            return c

    _CLASS = BlockWeightHook
    return _CLASS


def build_hooks(source: LoraSource, specs: list[HookSpec], strength_model: float, strength_clip: float, into=None):
    """A ComfyUI ``HookGroup`` with one hook per spec (its keyframes set), or ``None`` when nothing is active; ``into``
    (a HookGroup) collects the hooks of several LoRAs in one group."""
    hooks = hooks_module()
    cls = _hook_class()
    group = into if into is not None else hooks.HookGroup()
    for spec in specs:
        hook = cls(strength_model=strength_model, strength_clip=strength_clip)
        hook.source = source
        hook.block_weights = dict(spec.weights)
        if spec.keyframes:
            frames = hooks.HookKeyframeGroup()
            for strength, start in spec.keyframes:
                frames.add(hooks.HookKeyframe(strength=strength, start_percent=start, guarantee_steps=0))
            hook.hook_keyframe = frames
        group.add(hook)
    return group if len(group) else None


def set_clip_hooks(clip: Any, group: Any) -> Any:
    """ComfyUI's own Set CLIP Hooks (apply to conds, scheduled): the text encoder follows the same schedule."""
    from comfy_extras.nodes_hooks import SetClipHooks

    return SetClipHooks().apply_hooks(clip=clip, schedule_clip=True, apply_to_conds=True, hooks=group)[0]


def hooks_on_conditioning(positive: Any, negative: Any, group: Any) -> tuple[Any, Any]:
    """Both conditionings with the hooks, through one ``set_conds_props`` call (one cache), so they end up with the
    very same HookGroup object and ComfyUI keeps running them in one batch."""
    hooks = hooks_module()
    pos, neg = hooks.set_conds_props([positive, negative], strength=1.0, set_cond_area="default", hooks=group)
    return pos, neg
