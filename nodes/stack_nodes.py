"""LoRA Stack (chains entries) and Multi-LoRA Compose (the compatibility gate, then every entry applied)."""

from __future__ import annotations

from lorawb_core.compose import DEFAULT_OPPOSING, DEFAULT_THRESHOLD, StackEntry, check_stack
from lorawb_core.errors import IncompatibleStack
from lorawb_core.schedule_plan import plan_schedule

from . import host
from .comfy_hooks import LoraSource, build_hooks, hooks_module, set_clip_hooks
from .comfy_lora import apply_file, load_state_dict, lora_modules, model_family
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


PATCH, HOOKS = "patch model", "hooks"


class MultiLoraCompose:
    DESCRIPTION = ("Apply a stack of LoRAs after a compatibility gate that refuses the whole stack, listing every "
                   "offending entry and why (different base model, layout that cannot map, text-encoder mismatch, "
                   "missing or unreadable file). Non-blocking warnings go to the report. With schedule = hooks the "
                   "stack becomes HOOKS instead (ranges in the entries' weights act over their part of sampling), "
                   "like Block Schedule for every LoRA of the stack.")
    CATEGORY = CATEGORY
    FUNCTION = "compose"
    # HOOKS is appended last: saved workflows link outputs by slot index, so MODEL/CLIP/report keep theirs
    RETURN_TYPES = ("MODEL", "CLIP", "STRING", "HOOKS")
    RETURN_NAMES = ("MODEL", "CLIP", "report", "HOOKS")
    OUTPUT_TOOLTIPS = ("The model with every LoRA of the stack applied (schedule = hooks: the model unchanged).",
                       "The text encoder with them applied (schedule = hooks: with the hooks set, scheduled).",
                       "The gate's verdict, warnings and what each LoRA applied.",
                       "schedule = hooks: every LoRA of the stack as ComfyUI hooks, one per distinct schedule of each "
                       "LoRA; connect to Apply Hooks to Conditioning. None with schedule = patch model.")

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
            "optional": {
                "clip": ("CLIP", {"tooltip": "The text encoder."}),
                "schedule": ([PATCH, HOOKS], {"default": PATCH, "tooltip": (
                    "patch model: every LoRA patched into MODEL/CLIP over the whole run (ranges in the weights are "
                    "ignored, as in Block Weight Apply). hooks: MODEL passes through unchanged and the stack comes out "
                    "as HOOKS, each block at strength × weight inside its ranges (IN04=0.5@0-40%) and off outside "
                    "them; needs ComfyUI 0.3.11 or newer.")}),
                "steps": ("INT", {"default": 0, "min": 0, "max": 10000, "tooltip": (
                    "schedule = hooks: the sampler's step count, needed for ranges written in steps (@5-20); ramps "
                    "(0.2~1@0-50%) then change weight at every step (else in 10 pieces). 0 = not given.")}),
            },
        }

    def compose(self, model, stack, warn_block_strength, check_directions, clip=None, schedule=PATCH, steps=0):
        if schedule not in (PATCH, HOOKS):
            raise IncompatibleStack(f"schedule must be '{PATCH}' or '{HOOKS}', not {schedule!r}.")
        if schedule == HOOKS:
            hooks_module()  # a ComfyUI without hooks: the clear refusal, before any work
        verdict = host.with_db(check_stack, list(stack), model_family=model_family(model), has_clip=clip is not None,
                               threshold=warn_block_strength, opposing=DEFAULT_OPPOSING, directions=check_directions)
        if not verdict.ok:
            raise IncompatibleStack("Multi-LoRA Compose refused the stack:\n" + "\n".join(f"- {r}"
                                                                                          for r in verdict.reasons))
        lines = [verdict.text()]
        hooks = None
        if schedule == HOOKS:
            hooks, lines_hooks = _stack_hooks(verdict, steps or None)
            lines += lines_hooks
            if clip is not None and hooks is not None:
                clip = set_clip_hooks(clip, hooks)
        else:
            for entry in verdict.entries:
                model, clip, report = apply_file(
                    model, clip, entry.path, layout_id=verdict.layout_id, weights=entry.weights or {},
                    strength_model=entry.strength_model, strength_clip=entry.strength_clip, stable_id=entry.stable_id,
                    name=entry.name or "")
                lines.append(report.text())
                if entry.schedule:
                    lines.append(f"      note: the ranges of {', '.join(list(entry.schedule)[:5])} are ignored here "
                                 f"(each block acts at its weight over the whole run); set schedule to '{HOOKS}' to "
                                 "apply them")
        text = "\n".join(lines)
        return {"ui": {"text": [text]}, "result": (model, clip, text, hooks)}


def _stack_hooks(verdict, steps: int | None):
    """One HookGroup holding every entry's hooks (each LoRA's blocks grouped by schedule), and the report lines."""
    hooks = hooks_module()
    plans = [(entry, plan_schedule(entry.weights or {}, entry.schedule, steps)) for entry in verdict.entries]
    group = hooks.HookGroup()
    lines = []
    for entry, specs in plans:
        sd = load_state_dict(entry.path)
        source = LoraSource(sd, verdict.layout_id, lora_modules(entry.path, sd), entry.title)
        build_hooks(source, specs, entry.strength_model, entry.strength_clip, into=group)
        lines.append(f"  {entry.title}: {len(specs)} hook(s)")
        lines += [f"    {spec.ranges}: " + ", ".join(f"{b}×{w:g}" for b, w in spec.weights.items()) for spec in specs]
        if not specs:
            lines.append("    every block is at 0: nothing is applied")
    return (group if len(group) else None), lines


__all__ = ["LoraStack", "MultiLoraCompose"]
