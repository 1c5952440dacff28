"""LoRA Info: trigger words, a metadata summary and the block graph as an IMAGE."""

from __future__ import annotations

from lorawb_core.errors import LoraMissing

from . import host
from .common import CATEGORY, LoraChooser, lora_combo, resolve_lora


def _summary(entry) -> str:
    lines = [f"{entry.stable_id} · {entry.name}", f"file: {entry.path}",
             f"family: {entry.family}" + (f" ({entry.variant})" if entry.variant else "")
             + f", layout {entry.layout_id}, format {entry.format}",
             f"algorithms: {', '.join(f'{k}×{v}' for k, v in (entry.algorithms or {}).items())}; rank {entry.rank}, "
             f"alpha {entry.alpha}"]
    if entry.autov2:
        lines.append(f"AutoV2 {entry.autov2}, AutoV3 {entry.autov3}")
    training = (entry.metadata or {}).get("training") or {}
    facts = [f"{k} {v}" for k, v in training.items() if v not in (None, "", [], {})]
    if facts:
        lines.append("training: " + ", ".join(facts[:12]))
    if entry.problems:
        lines.append("problems: " + "; ".join(entry.problems))
    return "\n".join(lines)


def _bars(entry):
    """(bars, pending): the library's block strengths when ready, else measured now from the file (read-only)."""
    from lorawb_core.layouts import get_layout
    from lorawb_core.render import Bar

    if entry.blocks is not None:
        groups = {b.id: b.group for b in get_layout(entry.layout_id).blocks}
        shown = [b for b in entry.blocks if b.block_id in groups]
        return [Bar(b.block_id, groups[b.block_id], b.share or 0.0, b.exact) for b in shown], False
    from lorawb_core.inspection import inspect_file

    report = inspect_file(entry.path, blocks=True, spectra=False)
    if not report.blocks:
        return [], True
    view = set(get_layout(report.layout_id).block_ids)
    return [Bar(b.id, b.group, b.share, b.exact) for b in report.blocks if b.id in view], False


class LoraInfo(LoraChooser):
    DESCRIPTION = "Trigger words, a metadata summary and the per-block strength graph of a LoRA."
    CATEGORY = CATEGORY
    FUNCTION = "info"
    RETURN_TYPES = ("STRING", "STRING", "IMAGE")
    RETURN_NAMES = ("trigger_words", "summary", "block_graph")
    OUTPUT_TOOLTIPS = ("Trigger words, comma-separated (most frequent first).",
                       "Family, layout, format, algorithms, rank/alpha, hashes and training facts.",
                       "One bar per block of the LoRA's layout: its share of the LoRA's energy (‖ΔW‖²).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lora": lora_combo(),
                "width": ("INT", {"default": 1024, "min": 256, "max": 4096, "step": 8, "tooltip": "Image width."}),
                "height": ("INT", {"default": 384, "min": 128, "max": 2048, "step": 8, "tooltip": "Image height."}),
            },
            "optional": {"lora_ref": ("LORAWB_LORA", {"tooltip": "A LoRA reference; overrides the chooser."})},
        }

    def info(self, lora, width, height, lora_ref=None):
        import torch

        from lorawb_core.library import get_lora
        from lorawb_core.render import image_to_array, render_blocks

        ref = resolve_lora(lora, lora_ref)
        entry = host.with_db(get_lora, ref.stable_id)
        if entry.missing:
            raise LoraMissing(f"LoRA {entry.stable_id} is missing (last known file {entry.path}).")
        bars, pending = _bars(entry)
        img = render_blocks(bars, title=f"{entry.stable_id} · {entry.name}", width=width, height=height,
                            subtitle=f"{entry.layout_id} · {len(bars)} blocks · share of ‖ΔW‖²", pending=pending)
        image = torch.from_numpy(image_to_array(img))[None]
        words = ", ".join(entry.trigger_words)
        summary = _summary(entry)
        return {"ui": {"text": [summary]}, "result": (words, summary, image)}
