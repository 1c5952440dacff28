"""Applying a LoRA with per-block strength through ComfyUI's own machinery (no re-implementation of the host).

Load with ``comfy.utils.load_torch_file(..., safe_load=True)`` (through the process-wide cache), map keys with the
host's unet/clip key maps, build patches with ``comfy.lora.load_lora``, group them by the model weight key they land
on (fused q/k/v slices share one target) → block (layout registry) → one ``add_patches`` call per side on a clone,
after which each stored entry carries ``strength × weight`` of its block as its strength (what one call per weight
would have stored, without the host walking its state dict once per distinct weight). Alpha is never touched. Works
with the adapter objects of current ComfyUI and the tuples of older versions, since patches are passed through
untouched.
"""

from __future__ import annotations

import inspect
import logging
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from lorawb_core.apply import BlockPlan, patch_target, plan_patches
from lorawb_core.cache import default_cache
from lorawb_core.errors import IncompatibleStack
from lorawb_core.families import family_of_comfy_class
from lorawb_core.key_groups import split_key
from lorawb_core.layouts import REST

from .unpatched import Unpatched, base_weight, resolve_unpatched

log = logging.getLogger("lorawb")

def model_family(model: Any) -> str | None:
    """The lorawb family of a ComfyUI MODEL (ModelPatcher), when its config class is one of a family record."""
    config = getattr(getattr(model, "model", None), "model_config", None)
    return family_of_comfy_class(type(config).__name__) if config is not None else None


def comfy_loader(path: str) -> dict[str, Any]:
    import comfy.utils

    return comfy.utils.load_torch_file(path, safe_load=True)


def load_state_dict(path: str) -> dict[str, Any]:
    """The LoRA's tensors via the process-wide LRU (keyed by path, mtime, size)."""
    return default_cache().get(path, comfy_loader)


def apply_file(model: Any, clip: Any, path: str, **kwargs: Any) -> tuple[Any, Any, ApplyReport]:
    """:func:`apply_lora` on a LoRA file, through the cache."""
    sd = load_state_dict(path)
    return apply_lora(model, clip, sd, modules=lora_modules(path, sd), **kwargs)


@dataclass
class _KeyMap:
    lora_to_target: dict[str, Any]  # LoRA module key → model weight key (or (key, slice)) — the host's own map
    targets: set[str]  # the weight keys it points at


# The host's key maps depend only on the model's structure, which never changes for one module object: built once
# per model/text encoder (core LoraLoader rebuilds them on every call) and dropped with the object.
_KEY_MAPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_key_maps_lock = threading.Lock()


def _key_map(module: Any, build) -> _KeyMap:
    with _key_maps_lock:
        cached = _KEY_MAPS.get(module)
    if cached is None:
        mapping = build(module, {})
        cached = _KeyMap(mapping, {patch_target(v) for v in mapping.values()})
        with _key_maps_lock:
            _KEY_MAPS[module] = cached
    return cached


_MODULES: OrderedDict[Any, frozenset[str]] = OrderedDict()  # (path, mtime, size) → module keys; names only


def lora_modules(path: str, lora_sd: dict[str, Any]) -> frozenset[str]:
    """Module keys of a LoRA file's state dict, memoised per file version (no tensor is held here)."""
    key = default_cache().key_for(path)
    modules = _MODULES.get(key)
    if modules is None:
        modules = frozenset(split[0] for split in map(split_key, lora_sd) if split is not None)
        _MODULES[key] = modules
        while len(_MODULES) > 64:
            _MODULES.popitem(last=False)
    return modules


def _load_patches(lora_sd: dict[str, Any], key_map: dict[str, Any], modules: frozenset[str] | None
                  ) -> tuple[dict[Any, Any], list[str], dict[str, Any], frozenset[str]]:
    """``comfy.lora.load_lora`` on the (format-normalised) state dict, the LoRA modules the host could not map, and
    the state dict and module names it read."""
    import comfy.lora

    try:  # current ComfyUI normalises foreign formats first (comfy.sd.load_lora_for_models does the same)
        from comfy.lora_convert import convert_lora

        converted = convert_lora(lora_sd)
        if converted is not lora_sd and set(converted) != set(lora_sd):
            modules = None  # renamed keys: the memoised module names no longer apply
        lora_sd = converted
    except ImportError:
        pass
    if modules is None:
        modules = frozenset(split[0] for split in map(split_key, lora_sd) if split is not None)
    kwargs = {"log_missing": False} if "log_missing" in inspect.signature(comfy.lora.load_lora).parameters else {}
    patches = comfy.lora.load_lora(lora_sd, key_map, **kwargs)
    not_loaded = sorted(m for m in modules if m not in key_map)
    return patches, not_loaded, lora_sd, modules


@dataclass
class SideReport:
    """One side (model or text encoder) of an applied LoRA."""

    strength: float
    plan: BlockPlan | None = None
    accepted: int = 0  # patch keys the host's patcher accepted
    rejected: list[str] = field(default_factory=list)  # patch keys it refused (not in its state dict)


@dataclass
class ApplyReport:
    stable_id: str
    name: str
    layout_id: str
    weights_text: str
    model: SideReport | None = None
    clip: SideReport | None = None
    not_loaded: list[str] = field(default_factory=list)
    unpatched: Unpatched = field(default_factory=Unpatched)  # mapped, but the host made no patch of them
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"{self.stable_id} · {self.name} — layout {self.layout_id or 'unknown'}"]
        for side, rep in (("model", self.model), ("clip", self.clip)):
            if rep is None or rep.plan is None:
                continue
            if not rep.plan.layout_id:
                lines.append(f"  {side} strength {rep.strength:g}: {rep.accepted} weights patched, every one at this "
                             "strength")
                continue
            parts = [f"{g.block or REST}×{g.weight:g} ({len(g.keys)})" for g in rep.plan.groups]
            lines.append(f"  {side} strength {rep.strength:g}: {rep.accepted} weights patched; " + ", ".join(parts))
            if rep.plan.muted:
                lines.append(f"  {side} blocks at 0 (not applied): {', '.join(rep.plan.muted)}")
            if rep.plan.unmapped:
                shown = ", ".join(t.removeprefix("diffusion_model.").removesuffix(".weight")
                                  for t in rep.plan.unmapped[:3])
                lines.append(f"  {side}: {REST} = the {len(rep.plan.unmapped)} weights outside every block ({shown}"
                             f"{' …' if len(rep.plan.unmapped) > 3 else ''})")
        if self.not_loaded:
            lines.append(f"  not loaded (no matching weight in this model): {len(self.not_loaded)} modules, e.g. "
                         + ", ".join(self.not_loaded[:3]))
        lines += self.unpatched.lines()
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _add_weighted(clone: Any, plan: BlockPlan, patches: dict[Any, Any], strength: float) -> list[Any]:
    """Every group of ``plan`` in one ``add_patches`` call, then each entry it stored given ``strength × weight``.

    Both hosts store one ``(strength_patch, patch, …)`` tuple per accepted key at the end of ``patches[target]``
    (ModelPatcher.add_patches); replacing ``strength_patch`` there is exactly what a call per distinct weight would
    store, while the host checks the keys against its state dict once instead of once per weight."""
    patcher = getattr(clone, "patcher", clone)  # a CLIP wraps its ModelPatcher
    batch = {k: patches[k] for g in plan.groups for k in g.keys}
    if not batch:  # every block at 0
        return []
    weight_of = {patch_target(k): g.weight for g in plan.groups for k in g.keys}
    stored = patcher.patches
    before = {t: len(stored.get(t, ())) for t in weight_of}
    accepted = clone.add_patches(batch, 1.0)
    for target, start in before.items():
        entries = stored.get(target, [])
        scaled = strength * weight_of[target]
        for i in range(start, len(entries)):
            entries[i] = (scaled, *entries[i][1:])
    return accepted


def apply_lora(model: Any, clip: Any, lora_sd: dict[str, Any], *, layout_id: str | None, weights: dict[str, float],
               strength_model: float, strength_clip: float, stable_id: str = "", name: str = "",
               weights_text: str = "", modules: frozenset[str] | None = None,
               lora_layout: str = "") -> tuple[Any, Any, ApplyReport]:
    """Patch clones of ``model``/``clip`` with the LoRA, each block at ``strength × weights[block]`` (keys outside
    every block at ``weights[REST]``); ``layout_id=None`` applies every key at the side's strength (a uniform load).
    ``lora_layout`` names the LoRA's layout in the report (default: ``layout_id``).

    Raises IncompatibleStack when none of the LoRA's modules fit the model and text encoder given.
    """
    import comfy.lora

    unet = _key_map(model.model, comfy.lora.model_lora_keys_unet) if model is not None else _KeyMap({}, set())
    te = _key_map(clip.cond_stage_model, comfy.lora.model_lora_keys_clip) if clip is not None else _KeyMap({}, set())
    key_map = {**unet.lora_to_target, **te.lora_to_target}
    patches, not_loaded, lora_sd, modules = _load_patches(lora_sd, key_map, modules)
    report = ApplyReport(stable_id, name, lora_layout or layout_id or "", weights_text, not_loaded=not_loaded)

    def base_of(target: str):
        if model is not None and target in unet.targets:
            return base_weight(model, target)
        if clip is not None and target in te.targets:
            return base_weight(clip.patcher, target)
        return None

    report.unpatched = resolve_unpatched(lora_sd, key_map, patches, modules, base_of)
    if not patches and report.unpatched.dropped:
        raise IncompatibleStack(f"{stable_id} ({name}): this ComfyUI applies none of its modules:\n"
                                + "\n".join(report.unpatched.lines()))
    if not patches:
        raise IncompatibleStack(
            f"{stable_id} ({name}) does not fit this model: none of its {len(not_loaded)} modules match a weight of the "
            f"model{' or its text encoder' if clip is not None else ''}. Check the LoRA's base model (layout "
            f"{layout_id}) against the checkpoint.")
    new_model, new_clip = model, clip
    sides = ((model, unet.targets, strength_model, "model"), (clip, te.targets, strength_clip, "clip"))
    for base, targets, strength, side in sides:
        if base is None:
            continue
        keys = [k for k in patches if patch_target(k) in targets]
        rep = SideReport(strength)
        setattr(report, side, rep)
        if not keys or strength == 0:
            continue
        clone = base.clone()
        rep.plan = plan_patches(keys, layout_id, weights)
        accepted = set(_add_weighted(clone, rep.plan, patches, strength))
        rep.accepted = len(accepted)
        rep.rejected = [str(k) for g in rep.plan.groups for k in g.keys if k not in accepted]
        if side == "model":
            new_model = clone
        else:
            new_clip = clone
    if report.model and report.model.rejected or report.clip and report.clip.rejected:
        log.warning("lorawb: %s: the host refused %d patch keys", stable_id,
                    len((report.model.rejected if report.model else []) + (report.clip.rejected if report.clip else [])))
    return new_model, new_clip, report
