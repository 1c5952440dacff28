"""Save Merged LoRA: bake a LoRA Stack (or one LoRA with block weights) into a new file in ComfyUI's loras folder."""

from __future__ import annotations

import os

from lorawb_core.errors import UsageError

from . import host
from .common import CATEGORY, STRENGTH

RANK_MODES = ["rank", "concat", "sv_fro", "sv_ratio", "sv_cumulative"]


def _entries(stack, lora, weights, strength_model, strength_clip):
    from lorawb_core.merge import MergeInput

    items = []
    for e in stack or []:
        text = e.profile[1] if isinstance(e.profile, tuple) else None
        items.append(MergeInput(e.lora, e.strength_model, e.strength_clip, text,
                                None if isinstance(e.profile, tuple) else e.profile))
    if lora is not None:
        items.append(MergeInput(lora.stable_id, strength_model, strength_clip, None, weights))
    if not items:
        raise UsageError("Save Merged LoRA needs a LoRA Stack or a LoRA (from Load LoRA by stable_id).")
    return items


def _output_path(filename: str) -> str:
    from lorawb_core.library.config import comfy_lora_roots

    roots = comfy_lora_roots()
    if not roots:
        raise UsageError("ComfyUI has no loras folder to save into.")
    name = filename.strip() or "merged"
    if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
        raise UsageError(f"filename {filename!r} must be a name inside the loras folder (sub-folders allowed).")
    if not name.endswith(".safetensors"):
        name += ".safetensors"
    path = os.path.join(roots[0], name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


class SaveMergedLora:
    DESCRIPTION = ("Merge a LoRA Stack (strengths and block weights baked in) or one LoRA with block weights into a "
                   "new LoRA file in the loras folder, with exact low-rank math: concat is lossless, a target rank "
                   "is the best approximation of that rank. Outputs the new file's stable ID and the merge report.")
    CATEGORY = CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("stable_id", "report")
    OUTPUT_TOOLTIPS = ("The stable ID of the new LoRA (use it with Load LoRA by stable_id).",
                       "Per-block kept energy and truncation error.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "filename": ("STRING", {"default": "merged", "tooltip": "New file name inside the loras folder; an "
                                        "existing file is never overwritten."}),
                "rank_mode": (RANK_MODES, {"default": "rank", "tooltip": "rank: best rank-R approximation; concat: "
                                           "lossless; sv_*: a rank per module from its spectrum (kohya resize)."}),
                "rank": ("INT", {"default": 32, "min": 1, "max": 4096, "tooltip": "Target rank (cap for sv_*)."}),
                "conv_rank": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip": "3×3 conv rank; 0 = rank."}),
                "sv_param": ("FLOAT", {"default": 0.99, "min": 0.0001, "max": 10000.0, "step": 0.01,
                                       "tooltip": "sv_fro/sv_cumulative: fraction kept; sv_ratio: σ_max/σ ratio."}),
                "dtype": (["fp16", "bf16", "fp32"], {"default": "fp16", "tooltip": "Storage precision of the file."}),
                "metadata": (["merge", "new", "first"], {"default": "merge", "tooltip": (
                    "merge: tags and trigger words of every input; first: the first input's metadata; new: only the "
                    "merge's own keys (sources, hashes, modelspec)")}),
            },
            "optional": {
                "stack": ("LORAWB_STACK", {"tooltip": "The LoRAs, from chained LoRA Stack nodes."}),
                "lora_ref": ("LORAWB_LORA", {"tooltip": "A single LoRA (from Load LoRA by stable_id)."}),
                "weights": ("LORAWB_WEIGHTS", {"tooltip": "Block weights for lora_ref (from Profile Select)."}),
                "strength_model": ("FLOAT", {**STRENGTH, "tooltip": "lora_ref's strength on the model."}),
                "strength_clip": ("FLOAT", {**STRENGTH, "tooltip": "lora_ref's strength on the text encoder."}),
            },
        }

    def save(self, filename, rank_mode, rank, conv_rank, sv_param, dtype, metadata, stack=None, lora_ref=None,
             weights=None, strength_model=1.0, strength_clip=1.0):
        from lorawb_core.merge import RankRule, merge_loras

        if rank_mode == "concat":
            rule = RankRule()
        elif rank_mode == "rank":
            rule = RankRule(rank=rank, conv_rank=conv_rank or rank)
        else:
            rule = RankRule(rank=rank, conv_rank=conv_rank or None, dynamic=rank_mode, param=sv_param)
        items = _entries(stack, lora_ref, weights, strength_model, strength_clip)
        report = host.with_db(lambda db: merge_loras(items, _output_path(filename), rule=rule, dtype=dtype,
                                                     metadata=metadata, db=db))
        text = report.text()
        return {"ui": {"text": [text]}, "result": (report.stable_id or "", text)}


__all__ = ["SaveMergedLora"]
