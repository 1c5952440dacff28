"""Planned LoRAs applied through Forge's patcher (``extensions-builtin/sd_forge_lora``, ``backend.patcher``), exactly.

Forge's own ``<lora:…>`` path: ``load_lora(state_dict, model_lora_keys_unet(...))`` gives patches keyed by model weight,
and ``ModelPatcher.add_patches(filename=, patches=, strength_patch=)`` adds them at one strength. Ours does the same
with the host's functions, one ``add_patches`` per distinct strength (strength × block weight; a patch set is keyed
by ``(filename, strength, …)``, so one call per strength, never per block; the filename carries a digest of the block
weights, since Forge re-patches only when those identifiers change), on clones of the objects the host's own
LoRAs produced (``forge_objects_after_applying_lora``). The block of a patch comes from the file key it was read from
(the key maps Forge builds). Blocks at 0 add nothing, so ``NONE`` equals no LoRA and all-1 equals ``<lora:name:S>``.

Forge skips re-applying LoRAs when its list is unchanged (``current_lora_hash``); ours are not in that list, so the
hash is marked after applying and the next generation starts from the original model again.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from lorawb_core.apply import block_of_file_key
from lorawb_core.errors import HostUnsupported
from lorawb_core.layouts import REST
from lorawb_core.tag_plan import PlannedLora, TagPlan

HASH_MARK = "|lorawb"


def _digest(planned: PlannedLora) -> str:
    """Forge re-patches a model only when the patch sets' identifiers ``(filename, strength, …)`` change, so the
    block weights go into the name: the same strength with other blocks is another identifier."""
    text = repr((sorted(planned.weights.items()), planned.tag.te_strength, planned.tag.unet_strength))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class ForgeNetworks:
    host = "Forge patcher (add_patches per strength)"

    def __init__(self, networks) -> None:
        self.networks = networks
        self.applied: list[PlannedLora] = []

    def _patch(self, target, key_map: dict, lora_sd: dict, planned: PlannedLora, strength: float) -> tuple[object, dict]:
        """``target`` (a ModelPatcher or Forge CLIP) cloned with this LoRA's patches grouped by strength."""
        from backend.patcher.lora import load_lora  # type: ignore[import-not-found]

        patches, rest = load_lora(lora_sd, key_map)
        if not patches:
            return target, rest
        file_key_of = {}
        for file_prefix, model_key in key_map.items():
            mk = model_key[0] if isinstance(model_key, tuple) else model_key
            file_key_of.setdefault(mk, file_prefix)
        groups: dict[float, dict] = defaultdict(dict)
        for key, patch in patches.items():
            mk = key[0] if isinstance(key, tuple) else key
            prefix = file_key_of.get(mk)
            block = block_of_file_key(prefix, planned.family, planned.layout_id) if prefix else None
            weight = planned.weights.get(block, 0.0) if block else planned.weights.get(REST, 1.0)
            if weight != 0.0 and strength != 0.0:
                groups[strength * weight][key] = patch
        clone = target.clone()
        name = f"lorawb:{planned.stable_id}:{_digest(planned)}"
        for value, group in groups.items():
            clone.add_patches(filename=name, patches=group, strength_patch=value)
        return clone, rest

    def apply(self, plan: TagPlan, step: int | None = None) -> list[str]:
        from backend.patcher.lora import model_lora_keys_clip, model_lora_keys_unet  # type: ignore[import-not-found]
        from modules import sd_models  # type: ignore[import-not-found]

        self.applied = []
        if not plan.loras:
            return []
        bad = [p.tag.ref for p in plan.loras if p.tag.start is not None or p.tag.stop is not None]
        if bad:
            raise HostUnsupported(f"start=/stop= ({', '.join(bad)}) switch a LoRA during sampling, which lorawb applies "
                                  "through A1111's built-in Lora; on Forge leave them out.")
        sd = sd_models.model_data.get_sd_model()
        objects = sd.forge_objects_after_applying_lora.shallow_copy()
        notes = []
        for planned in plan.loras:
            lora_sd = dict(self.networks.load_lora_state_dict(planned.path))
            unet, clip = objects.unet, objects.clip
            rest = lora_sd
            if unet is not None:
                unet, rest = self._patch(unet, model_lora_keys_unet(unet.model, {}), rest, planned,
                                         planned.tag.unet_strength)
            if clip is not None:
                clip, rest = self._patch(clip, model_lora_keys_clip(clip.cond_stage_model, {}), rest, planned,
                                         planned.tag.te_strength)
            if rest:
                notes.append(f"{planned.stable_id}: {len(rest)} keys match nothing in the loaded checkpoint.")
            objects.unet, objects.clip = unet, clip
            self.applied.append(planned)
        sd.forge_objects_after_applying_lora = objects
        sd.forge_objects = objects.shallow_copy()
        if not str(sd.current_lora_hash).endswith(HASH_MARK):
            sd.current_lora_hash = str(sd.current_lora_hash) + HASH_MARK
        return notes

    def on_step(self, step: int) -> None:
        """Nothing changes per step on Forge (start=/stop= are refused in :meth:`apply`)."""
