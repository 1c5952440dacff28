"""Load LoRA by stable_id, Block Weight Apply, Profile Select: thin V1 nodes over lorawb_core."""

from __future__ import annotations

import logging

from lorawb_core.errors import LoraMissing

from . import host
from .comfy_lora import apply_file
from .common import (
    CATEGORY,
    STRENGTH,
    LoraChooser,
    check_family,
    lora_combo,
    profile_combo,
    resolve_block_weights,
    resolve_lora,
)

log = logging.getLogger("lorawb")


class LoadLoraById(LoraChooser):
    DESCRIPTION = ("Apply a LoRA chosen by its stable ID (it survives renames and moves) at a model and a text-encoder "
                   "strength.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", "CLIP", "LORAWB_LORA")
    RETURN_NAMES = ("MODEL", "CLIP", "lora")
    OUTPUT_TOOLTIPS = ("The model with the LoRA applied.", "The text encoder with the LoRA applied (None if no CLIP "
                       "was connected).", "A reference to this LoRA, for Block Weight Apply, LoRA Stack or LoRA Info.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The diffusion model to apply the LoRA to."}),
                "lora": lora_combo(),
                "strength_model": ("FLOAT", {**STRENGTH, "tooltip": "Strength on the diffusion model (0 skips it)."}),
                "strength_clip": ("FLOAT", {**STRENGTH, "tooltip": "Strength on the text encoder (0 skips it)."}),
            },
            "optional": {
                "clip": ("CLIP", {"tooltip": "The text encoder; leave unconnected for a model-only LoRA."}),
                "allow_missing": ("BOOLEAN", {"default": False, "tooltip": "If the LoRA's file is missing, pass the "
                                              "model through unchanged with a visible warning instead of failing."}),
            },
        }

    def load(self, model, lora, strength_model, strength_clip, clip=None, allow_missing=False):
        try:
            ref = resolve_lora(lora)
        except LoraMissing as exc:
            if not allow_missing:
                raise
            log.warning("lorawb: %s (passed through: allow_missing is on)", exc)
            return {"ui": {"text": [f"⚠ {exc} The model was passed through unchanged (allow_missing)."]},
                    "result": (model, clip, None)}
        check_family(ref, model)
        if strength_model == 0 and (clip is None or strength_clip == 0):
            return {"ui": {"text": [f"{ref.label}: both strengths are 0, nothing applied."]},
                    "result": (model, clip, ref)}
        new_model, new_clip, report = apply_file(
            model, clip, ref.path, layout_id=None, weights={}, strength_model=strength_model,
            strength_clip=strength_clip, stable_id=ref.stable_id, name=ref.name, lora_layout=ref.layout_id or "")
        return {"ui": {"text": [report.text()]}, "result": (new_model, new_clip, ref)}


class BlockWeightApply(LoraChooser):
    DESCRIPTION = ("Apply a LoRA with a weight per block (from Profile Select, or typed in any supported dialect: "
                   "LBW vector, preset name, BLOCK=value list, JSON). Each module gets strength × its block's weight "
                   "(strength_model on the diffusion model, strength_clip on the text encoder, whose blocks are BASE "
                   "or CLIP/T5); keys outside every block take REST's weight. Blocks are named, never positional.")
    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL", "CLIP", "STRING", "STRING")
    RETURN_NAMES = ("MODEL", "CLIP", "weights", "report")
    OUTPUT_TOOLTIPS = ("The model with the LoRA applied per block.", "The text encoder with the LoRA applied.",
                       "The resolved weights as BLOCK=value text over the LoRA's full layout (paste it back to reuse).",
                       "What was applied: per-block groups, muted blocks, keys outside every block, notes.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The diffusion model to apply the LoRA to."}),
                "lora": lora_combo(),
                "weights_text": ("STRING", {"default": "", "multiline": True, "tooltip": (
                    "Block weights when no profile is linked: an LBW vector (17 values for SD1, 12 for SDXL, 61 for "
                    "Flux …; Inspire's 27/21/58-value vectors too), a preset name (INS, OUTD, ALL0.5 …), BLOCK=value "
                    "pairs (IN04-OUT05=0.5, default=1, REST=0 for the keys outside every block) or JSON. Empty = "
                    "every block 1.")}),
                "strength_model": ("FLOAT", {**STRENGTH, "tooltip": "Strength on the diffusion model; each module "
                                             "gets strength_model × the weight of its block (0 skips the model)."}),
                "strength_clip": ("FLOAT", {**STRENGTH, "tooltip": "Strength on the text encoder; each module gets "
                                            "strength_clip × the weight of its block (BASE, or CLIP/T5)."}),
            },
            "optional": {
                "clip": ("CLIP", {"tooltip": "The text encoder (driven by the BASE, or CLIP/T5, block weights)."}),
                "lora_ref": ("LORAWB_LORA", {"tooltip": "A LoRA from Load LoRA by stable_id; overrides the chooser."}),
                "weights": ("LORAWB_WEIGHTS", {"tooltip": "A profile from Profile Select; overrides weights_text."}),
            },
        }

    def apply(self, model, lora, weights_text, strength_model=1.0, strength_clip=1.0, clip=None, **kwargs):
        if "lora_ref" in kwargs and kwargs["lora_ref"] is None:
            raise LoraMissing("The linked LoRA reference is empty (its loader passed a missing LoRA through); fix "
                              "the loader or unlink lora_ref.")
        ref = resolve_lora(lora, kwargs.get("lora_ref"))
        check_family(ref, model)
        resolved, notes = resolve_block_weights(ref, kwargs.get("weights"), weights_text)
        new_model, new_clip, report = apply_file(
            model, clip, ref.path, layout_id=ref.full_layout_id, weights=resolved.weights,
            strength_model=strength_model, strength_clip=strength_clip, stable_id=ref.stable_id, name=ref.name,
            weights_text=resolved.text(), lora_layout=ref.layout_id or ref.full_layout_id)
        report.notes.extend(notes)
        text = report.text()
        return {"ui": {"text": [text]}, "result": (new_model, new_clip, resolved.text(ref.layout_id), text)}


class ProfileSelect:
    DESCRIPTION = "Pick a block-weight profile (built-in preset or saved) for Block Weight Apply or LoRA Stack."
    CATEGORY = CATEGORY
    FUNCTION = "select"
    RETURN_TYPES = ("LORAWB_WEIGHTS", "STRING")
    RETURN_NAMES = ("weights", "vector")
    OUTPUT_TOOLTIPS = ("The profile: a weight per named block of its layout.",
                       "The profile as BLOCK=value text.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"profile": profile_combo()}}

    @classmethod
    def VALIDATE_INPUTS(cls, profile):
        from lorawb_core.errors import LorawbError

        try:
            _get_profile(profile)
        except LorawbError as exc:
            return str(exc)
        return True

    @classmethod
    def IS_CHANGED(cls, profile):
        try:
            p = _get_profile(profile)
        except Exception:  # noqa: BLE001
            return float("nan")
        return f"{p.layout_id}:{p.updated}:{list(p.weights.items())}"  # REST included

    def select(self, profile):
        p = _get_profile(profile)
        return (p, ", ".join(f"{b}={v:.6g}" for b, v in p.weights.items()))


def _get_profile(label: str):
    from lorawb_core.profiles import get_profile

    name, _, layout = str(label).partition(" · ")
    return host.with_db(get_profile, name.strip(), layout.strip() or None)
