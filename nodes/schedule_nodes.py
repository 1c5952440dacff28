"""Block Schedule and Apply Hooks to Conditioning: each block of a LoRA active over the part of sampling you choose,
built on ComfyUI's hooks (HOOKS, ComfyUI's own type: it composes with ComfyUI's hook nodes)."""

from __future__ import annotations

from lorawb_core.errors import LoraMissing
from lorawb_core.schedule_plan import plan_schedule

from .comfy_hooks import LoraSource, build_hooks, hooks_module, hooks_on_conditioning, set_clip_hooks
from .comfy_lora import load_state_dict, lora_modules
from .common import CATEGORY, STRENGTH, LoraChooser, lora_combo, resolve_block_weights, resolve_lora

WEIGHTS_TIP = ("Block weights with optional ranges of the run: IN04-OUT05=0.5@0-40% (percent), D00-D09=1@0.3-1.0 "
               "(fractions), OUT=1@5-20 (sampler steps: set 'steps'), default=1@0-50%, BASE=0; several ranges per "
               "block (OUT03=1@0-30%, OUT03=0.5@30-100%); ramps OUT03=0.2~1@0-50% (from 0.2 to 1 over the range: "
               "one piece per step with 'steps' set, else 10 pieces); LBW's start=/stop=/step= for the whole LoRA. "
               "A block without a range acts over the whole run; outside its ranges a scheduled block is off. Also "
               "every form Block Weight Apply takes (vector, preset, JSON).")


class BlockSchedule(LoraChooser):
    DESCRIPTION = ("Schedule each block of a LoRA over sampling: every block at strength × its weight inside its "
                   "ranges and off outside them, through ComfyUI's hooks. Connect HOOKS to Apply Hooks to "
                   "Conditioning (positive and negative together) or to ComfyUI's own hook nodes; the model stays "
                   "unpatched. With CLIP connected, the text-encoder blocks (BASE, CLIP/T5) follow the same "
                   "schedule through ComfyUI's scheduled CLIP hooks.")
    CATEGORY = CATEGORY
    FUNCTION = "schedule"
    RETURN_TYPES = ("HOOKS", "CLIP", "STRING")
    RETURN_NAMES = ("HOOKS", "CLIP", "report")
    OUTPUT_TOOLTIPS = ("ComfyUI hooks: one per distinct schedule (blocks that switch together share one).",
                       "The text encoder with the hooks set (scheduled); None when no CLIP was connected.",
                       "The hooks: their blocks, weights and ranges of the run.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lora": lora_combo(),
                "weights_text": ("STRING", {"default": "default=1", "multiline": True, "tooltip": WEIGHTS_TIP}),
                "strength_model": ("FLOAT", {**STRENGTH, "tooltip": "Strength on the diffusion model; each module "
                                             "gets strength_model × its block's weight inside its ranges."}),
                "strength_clip": ("FLOAT", {**STRENGTH, "tooltip": "Strength on the text encoder (BASE, or CLIP/T5 "
                                            "blocks); used when CLIP is connected."}),
                "steps": ("INT", {"default": 0, "min": 0, "max": 10000, "tooltip": (
                    "The sampler's step count: needed for ranges written in steps (@5-20; a switch before step k is "
                    "placed at (k-0.5)/N of the run), and it makes ramps change weight at every step (without it a "
                    "ramp has 10 pieces). 0 = not given.")}),
            },
            "optional": {
                "clip": ("CLIP", {"tooltip": "The text encoder: its blocks follow the same schedule (ComfyUI's "
                                  "scheduled CLIP hooks)."}),
                "lora_ref": ("LORAWB_LORA", {"tooltip": "A LoRA from Load LoRA by stable_id; overrides the chooser."}),
                "weights": ("LORAWB_WEIGHTS", {"tooltip": "A profile from Profile Select (its ranges included); "
                                               "overrides weights_text."}),
            },
        }

    def schedule(self, lora, weights_text, strength_model=1.0, strength_clip=1.0, steps=0, clip=None, **kwargs):
        hooks_module()  # a ComfyUI without hooks: the clear refusal, before any work
        if "lora_ref" in kwargs and kwargs["lora_ref"] is None:
            raise LoraMissing("The linked LoRA reference is empty (its loader passed a missing LoRA through); fix "
                              "the loader or unlink lora_ref.")
        ref = resolve_lora(lora, kwargs.get("lora_ref"))
        resolved, notes = resolve_block_weights(ref, kwargs.get("weights"), weights_text)
        specs = plan_schedule(resolved.weights, resolved.schedule, steps or None)
        sd = load_state_dict(ref.path)
        source = LoraSource(sd, ref.full_layout_id, lora_modules(ref.path, sd), ref.label)
        group = build_hooks(source, specs, strength_model, strength_clip)
        new_clip = set_clip_hooks(clip, group) if clip is not None and group is not None else clip
        lines = [f"{ref.label} — layout {ref.layout_id or ref.full_layout_id}: {len(specs)} hook(s), strength "
                 f"{strength_model:g} (model), {strength_clip:g} (clip)"]
        for spec in specs:
            blocks = ", ".join(f"{b}×{w:g}" for b, w in spec.weights.items())
            lines.append(f"  {spec.ranges}: {blocks}")
        if not specs:
            lines.append("  every block is at 0: nothing is applied")
        lines += [f"  note: {n}" for n in notes]
        text = "\n".join(lines)
        return {"ui": {"text": [text]}, "result": (group, new_clip, text)}


class ApplyHooksToConditioning:
    DESCRIPTION = ("Attach HOOKS (from Block Schedule or ComfyUI's hook nodes) to the positive and the negative "
                   "conditioning in one go, so both carry the same hooks and are still sampled in one batch.")
    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("The positive conditioning with the hooks.", "The negative conditioning with the hooks.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "The positive conditioning."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative conditioning."}),
            },
            "optional": {
                "hooks": ("HOOKS", {"tooltip": "The hooks to attach (none: the conditionings pass through)."}),
            },
        }

    def apply(self, positive, negative, hooks=None):
        hooks_module()
        if hooks is None:
            return (positive, negative)
        return hooks_on_conditioning(positive, negative, hooks)
