"""LoRA Stack (chains entries) and Multi-LoRA Compose (the compatibility gate, then every entry applied)."""

from __future__ import annotations

from lorawb_core.compose import DEFAULT_OPPOSING, DEFAULT_THRESHOLD, StackEntry, check_stack
from lorawb_core.errors import IncompatibleStack

from . import host
from .comfy_lora import apply_file, model_family
from .common import CATEGORY, STRENGTH, LoraChooser, lora_combo


class LoraStack(LoraChooser):
    DESCRIPTION = "Add a LoRA (with strengths and optional block weights) to a stack for Multi-LoRA Compose."
    CATEGORY = CATEGORY
    FUNCTION = "stack"
    RETURN_TYPES = ("LORAWB_STACK",)
    RETURN_NAMES = ("stack",)
    OUTPUT_TOOLTIPS = ("The incoming stack with this LoRA appended.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lora": lora_combo(),
                "strength_model": ("FLOAT", {**STRENGTH, "tooltip": "Strength on the diffusion model."}),
                "strength_clip": ("FLOAT", {**STRENGTH, "tooltip": "Strength on the text encoder."}),
                "weights_text": ("STRING", {"default": "", "multiline": False, "tooltip": (
                    "Optional block weights in any supported dialect (LBW vector, preset name, BLOCK=value pairs, "
                    "JSON); empty = every block 1.")}),
            },
            "optional": {
                "stack": ("LORAWB_STACK", {"tooltip": "A stack to append to (chain LoRA Stack nodes)."}),
                "weights": ("LORAWB_WEIGHTS", {"tooltip": "A profile from Profile Select; overrides weights_text."}),
            },
        }

    def stack(self, lora, strength_model, strength_clip, weights_text="", stack=None, weights=None):
        profile = weights if weights is not None else (("text", weights_text) if weights_text.strip() else None)
        return (list(stack or []) + [StackEntry(lora, strength_model, strength_clip, profile)],)


class MultiLoraCompose:
    DESCRIPTION = ("Apply a stack of LoRAs after a compatibility gate that refuses the whole stack, listing every "
                   "offending entry and why (different base model, layout that cannot map, text-encoder mismatch, "
                   "missing or unreadable file). Non-blocking warnings go to the report.")
    CATEGORY = CATEGORY
    FUNCTION = "compose"
    RETURN_TYPES = ("MODEL", "CLIP", "STRING")
    RETURN_NAMES = ("MODEL", "CLIP", "report")
    OUTPUT_TOOLTIPS = ("The model with every LoRA of the stack applied.", "The text encoder with them applied.",
                       "The gate's verdict, warnings and what each LoRA applied.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The diffusion model."}),
                "stack": ("LORAWB_STACK", {"tooltip": "The LoRAs, from chained LoRA Stack nodes."}),
                "warn_block_strength": ("FLOAT", {"default": DEFAULT_THRESHOLD, "min": 0.0, "max": 100.0,
                                                  "step": 0.1, "tooltip": "Warn when a block's combined strength "
                                                  "Σ|strength × weight| exceeds this."}),
                "check_directions": ("BOOLEAN", {"default": True, "tooltip": "Compare the LoRAs' deltas per block "
                                                 "(cosine, exact low-rank math) and warn when two pull opposite ways."}),
            },
            "optional": {"clip": ("CLIP", {"tooltip": "The text encoder."})},
        }

    def compose(self, model, stack, warn_block_strength, check_directions, clip=None):
        verdict = host.with_db(check_stack, list(stack), model_family=model_family(model), has_clip=clip is not None,
                               threshold=warn_block_strength, opposing=DEFAULT_OPPOSING, directions=check_directions)
        if not verdict.ok:
            raise IncompatibleStack("Multi-LoRA Compose refused the stack:\n" + "\n".join(f"- {r}"
                                                                                          for r in verdict.reasons))
        lines = [verdict.text()]
        for entry in verdict.entries:
            model, clip, report = apply_file(
                model, clip, entry.path, layout_id=verdict.layout_id, weights=entry.weights or {},
                strength_model=entry.strength_model, strength_clip=entry.strength_clip, stable_id=entry.stable_id,
                name=entry.name or "")
            lines.append(report.text())
        text = "\n".join(lines)
        return {"ui": {"text": [text]}, "result": (model, clip, text)}


__all__ = ["LoraStack", "MultiLoraCompose"]
