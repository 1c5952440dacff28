"""LoRA files written by the *real* libraries (peft + diffusers, LyCORIS), for tests.

Every writer builds the real model architecture at its real module names and real
shapes, but on the ``meta`` device, so no base weights are ever allocated.  Only the
adapter parameters are materialised as seeded random CPU tensors; the state dict is then
produced and saved by the library's own code path, exactly as the training scripts do:

* PEFT / diffusers: ``model.add_adapter(LoraConfig(...))`` -> ``peft.get_peft_model_state_dict``
  (-> ``diffusers.utils.convert_state_dict_to_diffusers`` for SD/SDXL, as
  ``train_text_to_image_lora.py`` / ``train_dreambooth_lora(_sdxl).py`` do) ->
  ``<Pipeline>.save_lora_weights(...)``.  Flux, SD3, Wan and HunyuanVideo keep the raw
  PEFT keys, as ``train_dreambooth_lora_flux.py`` / ``_sd3.py`` do.
* LyCORIS: ``lycoris.kohya.create_network(...)`` (the entry point sd-scripts calls for
  ``--network_module lycoris.kohya``) -> ``network.apply_to(...)`` ->
  ``network.save_weights(file, dtype, metadata)``.

Versions used when this file was written: torch 2.13, peft 0.21.2, diffusers 0.42.1,
transformers 5.23.0, lycoris-lora 4.1.3.  Every :class:`WrittenLora` records the versions
actually used in ``writer``.

Key patterns actually written (one example per file, shape in brackets)
-----------------------------------------------------------------------
PEFT, SD1.5 (``write_peft_sd15``), diffusers "new" naming produced by
``convert_state_dict_to_diffusers`` (NOT ``lora_A``/``lora_B``)::

    unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora.down.weight   [4, 768]
    unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora.up.weight     [320, 4]
    text_encoder.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight        [4, 768]

  With transformers >= 5 ``CLIPTextModel`` no longer has the ``text_model`` wrapper, so the
  TE keys are ``text_encoder.encoder.layers.N...``; files written with transformers 4.x (every
  SD1.5/SDXL LoRA in the wild) have ``text_encoder.text_model.encoder.layers.N...``.
  ``te_layout="text_model"`` rebuilds the 4.x module tree (a real ``CLIPTextModel`` held
  as ``.text_model``) so the libraries write that form.
  ``key_style="peft"`` skips ``convert_state_dict_to_diffusers`` and gives
  ``unet.<path>.lora_A.weight`` / ``.lora_B.weight`` (what newer trainers write).

PEFT, SD2.x (``write_peft_sd2``): as SD1.5, cross-attn ``attn2.to_k.lora.down.weight`` [4, 1024],
  TE 23 layers x 1024.
PEFT, SDXL (``write_peft_sdxl``)::

    unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora.down.weight   [4, 2048]
    text_encoder.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight        [4, 768]
    text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.up.weight [1280, 4]

  (te2 is ``CLIPTextModelWithProjection`` which still has ``.text_model`` in transformers 5).
PEFT DoRA (``write_peft_dora``, SDXL ``--use_dora`` path): adds one key per module without
  ``.weight``: ``unet.<path>.to_q.lora_magnitude_vector`` [out] (Flux: ``transformer.<path>.lora_magnitude_vector``).
diffusers kohya export (``write_diffusers_kohya_sdxl``, SDXL script ``--output_kohya_format``)::

    lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight  [4, 2048]
    lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.alpha             [] int64 = rank

  diffusers UNet paths (not SGM ``input_blocks``), no metadata; with the text encoders trained the
  UNet keys come out malformed (``..._to_k_lora.down.weight``, no alpha) - see the function.
PEFT, SD3 (``write_peft_sd3``)::

    transformer.transformer_blocks.0.attn.to_q.lora_A.weight      [4, 1536]
    transformer.transformer_blocks.0.attn.add_k_proj.lora_B.weight [1536, 4]

PEFT, Flux (``write_peft_flux``)::

    transformer.transformer_blocks.0.attn.to_q.lora_A.weight            [4, 3072]
    transformer.single_transformer_blocks.0.proj_mlp.lora_B.weight       [12288, 4]
    transformer.single_transformer_blocks.0.proj_out.lora_A.weight       [4, 15360]

PEFT, Wan (``write_peft_wan``)::

    transformer.blocks.0.attn1.to_q.lora_A.weight       [4, 1536]   (1.3B)
    transformer.blocks.0.ffn.net.0.proj.lora_B.weight   [8960, 4]
    transformer.blocks.0.attn2.add_k_proj.lora_A.weight [4, 5120]   (i2v-14b only)

PEFT, HunyuanVideo (``write_peft_hunyuan_video``)::

    transformer.transformer_blocks.0.attn.to_q.lora_A.weight                              [4, 3072]
    transformer.single_transformer_blocks.39.attn.to_k.lora_B.weight                       [3072, 4]
    transformer.context_embedder.token_refiner.refiner_blocks.0.attn.to_q.lora_A.weight    [4, 3072]

All PEFT files carry no ``.alpha`` tensor.  ``lora_alpha``/``r`` are in the safetensors
metadata key ``lora_adapter_metadata`` (JSON; every config field prefixed with the component,
e.g. ``"transformer.lora_alpha": 8``, ``"unet.r": 4``) when ``adapter_metadata=True``; the
metadata also holds ``"format": "pt"``.

LyCORIS (``write_lycoris``), kohya naming ``lora_unet_<diffusers path with _>`` /
``lora_te_<path>``, SD1.5 model, every module also has a 0-dim ``.alpha``::

    lora   lora_unet_..._attn2_to_k.lora_down.weight [4, 768], .lora_up.weight [320, 4]
    locon  lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight [4, 320, 3, 3], lora_up [320, 4, 1, 1]
    locon+tucker  ..._conv1.lora_down.weight [4, 320, 1, 1], .lora_mid.weight [4, 4, 3, 3]
    loha   .hada_w1_a [320, 4], .hada_w1_b [4, 768], .hada_w2_a, .hada_w2_b   (conv: w1_b [4, 2880])
    loha+tucker   conv: .hada_t1/.hada_t2 [4, 4, 3, 3], .hada_w1_a [4, 320] (transposed), .hada_w1_b [4, 320]
    lokr   .lokr_w1 [16, 24], .lokr_w2_a [20, 4], .lokr_w2_b [4, 32]    (factor=-1)
    lokr full_matrix   .lokr_w1 [16, 24], .lokr_w2 [20, 32]   (alpha tensor written = rank)
    lokr decompose_both  .lokr_w1_a / .lokr_w1_b / .lokr_w2_a / .lokr_w2_b
    lokr+tucker (conv)   .lokr_t2 [4, 4, 3, 3], .lokr_w2_a [4, b], .lokr_w2_b [4, d]
    dora   locon keys + .dora_scale [out, 1] (linear) / [out, 1, 1, 1] (conv)
    ia3    .weight [out] (or [in] with .on_input == 1), .on_input [] ; no alpha
    glora  .a1.weight [in, r], .a2.weight [r, in], .b1.weight [out, r], .b2.weight [r, in]
    full   .diff [out, in], .diff_b [out]; no alpha
    oft    .oft_blocks [n_blocks, bs, bs] (diag-oft), .alpha (= constraint, 0)
    boft   .oft_blocks [m, n_blocks, bs, bs], .alpha

``save_weights(file, dtype, ...)`` casts *every* tensor to ``dtype`` (fp16 here), so ``.alpha``
and the (IA)^3 ``.on_input`` flag (an int64 buffer in the network) are stored as fp16.

LyCORIS metadata: only ``sshs_model_hash`` (added by ``save_weights``) plus whatever
``metadata=`` you pass (sd-scripts adds its ``ss_*`` keys there; this module does not
invent them).

Library behaviours found while writing this (see :func:`write_lycoris`):

* LyCORIS 4.1.3 built-in preset ``full`` crashes on a diffusers ``UNet2DConditionModel``
  ("duplicated lora name: lora_unet_time_embedding_linear_1"): it lists both the class
  ``TimestepEmbedding`` and the names ``time_embedding.linear_1/2``.  We pass the classic
  full preset (Transformer2DModel, ResnetBlock2D, Downsample2D, Upsample2D, conv_in,
  conv_out, time_embedding.linear_1/2; CLIPAttention, CLIPMLP) as a TOML preset file.
* Built-in preset ``ia3`` matches nothing (regex ``re.match("to_k", name)`` is anchored at
  the start of the full module path); we pass the same targets as fnmatch patterns.
* ``create_network`` compares the algo string with the class ``GLoRAModule``, so the
  "GLoRA only on transformer" restriction never applies; GLoRA is written for conv layers too.
* BOFT needs ``rank`` such that every out-dim factors as (even m) x (power of two); for SD
  channel counts the smallest that works is 16 (rank 4 raises ValueError).
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "ALL_WRITERS",
    "LYCORIS_ALGOS",
    "WrittenLora",
    "describe",
    "module_names_from_keys",
    "write_diffusers_kohya_sdxl",
    "write_lycoris",
    "write_peft_dora",
    "write_peft_flux",
    "write_peft_hunyuan_video",
    "write_peft_sd2",
    "write_peft_sd3",
    "write_peft_sd15",
    "write_peft_sd15_te",
    "write_peft_sd15_unet",
    "write_peft_sdxl",
    "write_peft_wan",
]


# --------------------------------------------------------------------------------------
# Result type


@dataclass
class WrittenLora:
    """What a writer produced."""

    path: Path
    writer: str  # e.g. "peft 0.21.2 / diffusers 0.42.1 / transformers 5.23.0"
    family: str  # "sd1", "sd2", "sdxl", "sd3", "flux", "wan", "hunyuan_video"
    variant: str | None
    algorithm: str  # "lora", "locon", "loha", "lokr", "dora", "ia3", "glora", "full", "oft", "boft"
    rank: int
    alpha: float | None
    expected_module_count: int  # distinct adapted modules in the file
    state_dict_keys: list[str]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


# Parameter-name suffixes that follow the module key, longest first.
_PARAM_SUFFIXES = (
    ".lora_linear_layer.down.weight",
    ".lora_linear_layer.up.weight",
    ".lora_magnitude_vector.weight",
    ".lora_magnitude_vector",
    ".lora.down.weight",
    ".lora.up.weight",
    ".lora_A.weight",
    ".lora_B.weight",
    ".lora_B.bias",
    ".lora_down.weight",
    ".lora_up.weight",
    ".lora_mid.weight",
    "_lora.down.weight",  # malformed diffusers kohya export (see write_diffusers_kohya_sdxl)
    "_lora.up.weight",
    ".dora_scale",
    ".alpha",
    ".hada_w1_a",
    ".hada_w1_b",
    ".hada_w2_a",
    ".hada_w2_b",
    ".hada_t1",
    ".hada_t2",
    ".lokr_w1_a",
    ".lokr_w1_b",
    ".lokr_w2_a",
    ".lokr_w2_b",
    ".lokr_w1",
    ".lokr_w2",
    ".lokr_t1",
    ".lokr_t2",
    ".on_input",
    ".a1.weight",
    ".a2.weight",
    ".b1.weight",
    ".b2.weight",
    ".bm.weight",
    ".oft_blocks",
    ".rescale",
    ".diff_b",
    ".diff",
    ".weight",  # (IA)^3 vector: must stay last
)


def module_names_from_keys(keys: list[str]) -> set[str]:
    """Group tensor keys into module keys by stripping the known parameter suffix."""
    out = set()
    for key in keys:
        for suffix in _PARAM_SUFFIXES:
            if key.endswith(suffix):
                out.add(key[: -len(suffix)])
                break
        else:
            out.add(key)
    return out


# --------------------------------------------------------------------------------------
# Real configs (written in code; nothing is downloaded)

SD15_UNET_CONFIG: dict[str, Any] = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)
SD2_UNET_CONFIG: dict[str, Any] = dict(
    SD15_UNET_CONFIG,
    sample_size=96,
    cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
)
SDXL_UNET_CONFIG: dict[str, Any] = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
)
# CLIP ViT-L/14 text tower (SD1.x, SDXL text_encoder, Flux/SD3 CLIP-L)
CLIP_L_CONFIG: dict[str, Any] = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)
# OpenCLIP ViT-H/14 text tower as diffusers ships it for SD2.x (23 of 24 layers)
OPENCLIP_H_CONFIG: dict[str, Any] = dict(
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=512,
)
# OpenCLIP ViT-bigG/14 text tower (SDXL text_encoder_2)
OPENCLIP_BIGG_CONFIG: dict[str, Any] = dict(
    vocab_size=49408,
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=1280,
)
SD3_CONFIGS: dict[str, dict[str, Any]] = {
    "3-medium": dict(
        sample_size=128,
        patch_size=2,
        in_channels=16,
        num_layers=24,
        attention_head_dim=64,
        num_attention_heads=24,
        joint_attention_dim=4096,
        caption_projection_dim=1536,
        pooled_projection_dim=2048,
        out_channels=16,
        pos_embed_max_size=192,
    ),
    "3.5-medium": dict(
        sample_size=128,
        patch_size=2,
        in_channels=16,
        num_layers=24,
        attention_head_dim=64,
        num_attention_heads=24,
        joint_attention_dim=4096,
        caption_projection_dim=1536,
        pooled_projection_dim=2048,
        out_channels=16,
        pos_embed_max_size=384,
        dual_attention_layers=tuple(range(13)),
        qk_norm="rms_norm",
    ),
    "3.5-large": dict(
        sample_size=128,
        patch_size=2,
        in_channels=16,
        num_layers=38,
        attention_head_dim=64,
        num_attention_heads=38,
        joint_attention_dim=4096,
        caption_projection_dim=2432,
        pooled_projection_dim=2048,
        out_channels=16,
        pos_embed_max_size=192,
        qk_norm="rms_norm",
    ),
}
FLUX_CONFIGS: dict[str, dict[str, Any]] = {
    "dev": dict(
        patch_size=1,
        in_channels=64,
        num_layers=19,
        num_single_layers=38,
        attention_head_dim=128,
        num_attention_heads=24,
        joint_attention_dim=4096,
        pooled_projection_dim=768,
        guidance_embeds=True,
        axes_dims_rope=(16, 56, 56),
    ),
}
FLUX_CONFIGS["schnell"] = dict(FLUX_CONFIGS["dev"], guidance_embeds=False)
_WAN_COMMON: dict[str, Any] = dict(
    patch_size=(1, 2, 2),
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
)
WAN_CONFIGS: dict[str, dict[str, Any]] = {
    "1.3b": dict(_WAN_COMMON, num_attention_heads=12, ffn_dim=8960, num_layers=30),
    "14b": dict(_WAN_COMMON, num_attention_heads=40, ffn_dim=13824, num_layers=40),
    "i2v-14b": dict(
        _WAN_COMMON,
        num_attention_heads=40,
        ffn_dim=13824,
        num_layers=40,
        in_channels=36,
        image_dim=1280,
        added_kv_proj_dim=5120,
    ),
    "ti2v-5b": dict(_WAN_COMMON, num_attention_heads=24, ffn_dim=14336, num_layers=30, in_channels=48, out_channels=48),
}
HUNYUAN_VIDEO_CONFIG: dict[str, Any] = dict(
    in_channels=16,
    out_channels=16,
    num_attention_heads=24,
    attention_head_dim=128,
    num_layers=20,
    num_single_layers=40,
    num_refiner_layers=2,
    mlp_ratio=4.0,
    patch_size=2,
    patch_size_t=1,
    qk_norm="rms_norm",
    guidance_embeds=True,
    text_embed_dim=4096,
    pooled_projection_dim=768,
    rope_theta=256.0,
    rope_axes_dim=(16, 56, 56),
)

# Target modules of the official diffusers training scripts.
SD_UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]  # train_text_to_image_lora.py, train_dreambooth_lora_sdxl.py
CLIP_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
SD3_TARGETS = [  # train_dreambooth_lora_sd3.py default
    "attn.add_k_proj",
    "attn.add_q_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "attn.to_k",
    "attn.to_out.0",
    "attn.to_q",
    "attn.to_v",
]
FLUX_TARGETS = [  # train_dreambooth_lora_flux.py default + "--lora_layers" extras proj_mlp, proj_out
    "attn.to_k",
    "attn.to_q",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_k_proj",
    "attn.add_q_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "ff.net.0.proj",
    "ff.net.2",
    "ff_context.net.0.proj",
    "ff_context.net.2",
    "proj_mlp",
    "proj_out",
]
WAN_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj", "ffn.net.0.proj", "ffn.net.2"]
HUNYUAN_VIDEO_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # finetrainers default


# --------------------------------------------------------------------------------------
# Helpers


def _versions(*dists: str) -> str:
    from importlib.metadata import version

    return " / ".join(f"{d} {version(d)}" for d in dists)


class _TextModelWrapper(nn.Module):
    """Module tree of transformers<5 ``CLIPTextModel``: the real text tower as ``.text_model``.

    transformers 5 flattened ``CLIPTextModel`` (``encoder.layers.N``); 4.x, which produced all
    existing SD/SDXL LoRAs and which sd-scripts pins (4.44), had ``text_model.encoder.layers.N``.
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.text_model = inner


def _build_meta(factory: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return factory()


def _clip_text_model(
    config: dict[str, Any], *, with_projection: bool = False, te_layout: str = "installed"
) -> nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    model = _build_meta(lambda: cls(CLIPTextConfig(**config)))
    if te_layout == "text_model" and not hasattr(model, "text_model"):
        model = _TextModelWrapper(model)
    elif te_layout not in ("installed", "text_model"):
        raise ValueError(f"te_layout must be 'installed' or 'text_model', not {te_layout!r}")
    return model


def _init_value(name: str, shape: torch.Size, rank: int, gen: torch.Generator) -> torch.Tensor:
    """Seeded random values that look like a trained adapter of the given kind."""
    t = torch.randn(shape, generator=gen, dtype=torch.float32)
    if "lora_magnitude_vector" in name or name.endswith("dora_scale"):
        return t.abs() * 0.1 + 1.0
    if ".lora_A." in name or ".lora_down." in name:
        return t / max(rank, 1)
    return t * 0.01


def _materialise(model: nn.Module, wanted: Callable[[str], bool], rank: int, dtype: torch.dtype, seed: int) -> int:
    """Replace every matching (meta or CPU) parameter by seeded random CPU values; return count."""
    gen = torch.Generator().manual_seed(seed)
    n = 0
    for mod_name, mod in model.named_modules():
        for p_name, p in list(mod._parameters.items()):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if p is None or not wanted(full):
                continue
            value = _init_value(full, p.shape, rank, gen).to(dtype)
            mod._parameters[p_name] = nn.Parameter(value, requires_grad=p.requires_grad)
            n += 1
    return n


def _cheap_cpu_base(model: nn.Module) -> None:
    """Turn meta base weights into zero-stride CPU views of one scalar (no real allocation).

    LyCORIS reads base weights at construction for DoRA (norms) and "full" (copy); everything
    else only needs shapes.  Views of one element cost 4 bytes each.
    """
    for mod in model.modules():
        for name, p in list(mod._parameters.items()):
            if p is not None and p.is_meta:
                mod._parameters[name] = nn.Parameter(torch.full((), 0.02).expand(p.shape), requires_grad=False)
        for name, b in list(mod._buffers.items()):
            if b is not None and b.is_meta:
                mod._buffers[name] = torch.zeros((), dtype=b.dtype).expand(b.shape)


def _peft_inject(model: nn.Module, config: Any) -> None:
    """``model.add_adapter`` as the training scripts do; plain ``inject_adapter_in_model`` otherwise."""
    if hasattr(model, "add_adapter"):
        model.add_adapter(config)
    else:
        from peft import inject_adapter_in_model

        inject_adapter_in_model(config, model)


def _peft_module_count(model: nn.Module) -> int:
    from peft.tuners.lora import LoraLayer

    return sum(1 for m in model.modules() if isinstance(m, LoraLayer))


def _peft_prepare(
    model: nn.Module,
    *,
    rank: int,
    alpha: float,
    targets: list[str] | str,
    dtype: torch.dtype,
    seed: int,
    use_dora: bool = False,
    lora_bias: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], int]:
    """Inject a LoRA, materialise it, return (peft state dict, adapter config dict, module count)."""
    from peft import LoraConfig, get_peft_model_state_dict

    config = LoraConfig(
        r=rank, lora_alpha=alpha, init_lora_weights=True if lora_bias else "gaussian",
        target_modules=targets if isinstance(targets, str) else list(targets),
        use_dora=use_dora, **({"lora_bias": True} if lora_bias else {}),
    )
    _peft_inject(model, config)
    _materialise(model, lambda name: "lora_" in name, rank, dtype, seed)
    state = get_peft_model_state_dict(model)
    bad = [k for k, v in state.items() if v.is_meta]
    if bad:
        raise RuntimeError(f"adapter tensors left on meta: {bad[:3]}")
    meta = model.peft_config["default"].to_dict() if hasattr(model, "peft_config") else config.to_dict()
    return state, meta, _peft_module_count(model)


def _read_back(path: Path) -> tuple[list[str], dict[str, tuple[int, ...]], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
        metadata = dict(f.metadata() or {})
    return keys, shapes, metadata


def _result(path: Path, **kwargs: Any) -> WrittenLora:
    keys, shapes, metadata = _read_back(path)
    return WrittenLora(path=path, state_dict_keys=keys, shapes=shapes, metadata=metadata, **kwargs)


def _to_diffusers(state: dict[str, torch.Tensor], key_style: str) -> dict[str, torch.Tensor]:
    if key_style == "diffusers":
        from diffusers.utils import convert_state_dict_to_diffusers

        return convert_state_dict_to_diffusers(state)
    if key_style == "peft":
        return state
    raise ValueError(f"key_style must be 'diffusers' or 'peft', not {key_style!r}")


# --------------------------------------------------------------------------------------
# PEFT / diffusers writers: SD1.x, SD2.x, SDXL


def _write_peft_sd(
    directory: str | Path,
    *,
    family: str,
    rank: int,
    alpha: float | None,
    train_unet: bool,
    train_text_encoder: bool,
    key_style: str,
    adapter_metadata: bool,
    te_layout: str,
    dtype: torch.dtype,
    seed: int,
    weight_name: str,
    use_dora: bool = False,
    lora_bias: bool = False,
    unet_targets: list[str] | str | None = None,
) -> WrittenLora:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel

    alpha = float(rank if alpha is None else alpha)
    unet_config = {"sd1": SD15_UNET_CONFIG, "sd2": SD2_UNET_CONFIG, "sdxl": SDXL_UNET_CONFIG}[family]
    layers: dict[str, Any] = {}
    count = 0
    seed_i = seed
    if train_unet:
        unet = _build_meta(lambda: UNet2DConditionModel(**unet_config))
        state, meta, n = _peft_prepare(
            unet, rank=rank, alpha=alpha, targets=unet_targets or SD_UNET_TARGETS, dtype=dtype, seed=seed_i,
            use_dora=use_dora, lora_bias=lora_bias,
        )
        layers["unet_lora_layers"] = _to_diffusers(state, key_style)
        if adapter_metadata:
            layers["unet_lora_adapter_metadata"] = meta
        count += n
    if train_text_encoder:
        if family == "sdxl":
            encoders = [
                ("text_encoder", _clip_text_model(CLIP_L_CONFIG, te_layout=te_layout)),
                ("text_encoder_2", _clip_text_model(OPENCLIP_BIGG_CONFIG, with_projection=True, te_layout=te_layout)),
            ]
        else:
            te_config = CLIP_L_CONFIG if family == "sd1" else OPENCLIP_H_CONFIG
            encoders = [("text_encoder", _clip_text_model(te_config, te_layout=te_layout))]
        for name, te in encoders:
            seed_i += 1
            state, meta, n = _peft_prepare(
                te, rank=rank, alpha=alpha, targets=CLIP_TARGETS, dtype=dtype, seed=seed_i, use_dora=use_dora
            )
            layers[f"{name}_lora_layers"] = _to_diffusers(state, key_style)
            if adapter_metadata:
                layers[f"{name}_lora_adapter_metadata"] = meta
            count += n
    pipeline_cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    pipeline_cls.save_lora_weights(str(directory), weight_name=weight_name, safe_serialization=True, **layers)
    return _result(
        Path(directory) / weight_name,
        writer=_versions("peft", "diffusers", "transformers"),
        family=family,
        variant=None,
        algorithm="dora" if use_dora else "lora",
        rank=rank,
        alpha=alpha,
        expected_module_count=count,
        options=dict(
            train_unet=train_unet,
            train_text_encoder=train_text_encoder,
            key_style=key_style,
            adapter_metadata=adapter_metadata,
            te_layout=te_layout,
            pipeline=pipeline_cls.__name__,
        ),
    )


def write_peft_sd15(
    directory: str | Path,
    rank: int = 4,
    *,
    alpha: float | None = None,
    train_unet: bool = True,
    train_text_encoder: bool = True,
    key_style: str = "diffusers",
    adapter_metadata: bool = True,
    te_layout: str = "installed",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    weight_name: str = "peft_sd15.safetensors",
    lora_bias: bool = False,
) -> WrittenLora:
    """SD1.5 UNet (+ CLIP-L TE) LoRA the way ``train_dreambooth_lora.py`` saves it.

    UNet targets ``to_k/to_q/to_v/to_out.0`` (128 modules), TE ``q/k/v/out_proj`` (48 modules),
    ``lora_alpha = rank`` (scripts hard-code it), fp32 (scripts upcast before saving),
    ``convert_state_dict_to_diffusers`` keys, saved by ``StableDiffusionPipeline.save_lora_weights``.
    ``adapter_metadata=True`` additionally passes ``unet_lora_adapter_metadata`` /
    ``text_encoder_lora_adapter_metadata`` (the SD scripts themselves do not; Flux/SD3 ones do).
    """
    return _write_peft_sd(
        directory,
        family="sd1",
        rank=rank,
        alpha=alpha,
        train_unet=train_unet,
        train_text_encoder=train_text_encoder,
        key_style=key_style,
        adapter_metadata=adapter_metadata,
        te_layout=te_layout,
        dtype=dtype,
        seed=seed,
        weight_name=weight_name,
        lora_bias=lora_bias,
    )


def write_peft_sd15_unet(directory: str | Path, rank: int = 4, **kwargs: Any) -> WrittenLora:
    """UNet-only SD1.5 LoRA (``train_text_to_image_lora.py``): keys ``unet.<path>.to_q.lora.down.weight``."""
    kwargs.setdefault("weight_name", "peft_sd15_unet.safetensors")
    return write_peft_sd15(directory, rank, train_text_encoder=False, **kwargs)


def write_peft_sd15_te(directory: str | Path, rank: int = 4, **kwargs: Any) -> WrittenLora:
    """Text-encoder-only SD1.5 LoRA: keys ``text_encoder.<path>.q_proj.lora_linear_layer.down.weight``."""
    kwargs.setdefault("weight_name", "peft_sd15_te.safetensors")
    return write_peft_sd15(directory, rank, train_unet=False, **kwargs)


def write_peft_sd2(
    directory: str | Path,
    rank: int = 4,
    *,
    alpha: float | None = None,
    train_text_encoder: bool = True,
    key_style: str = "diffusers",
    adapter_metadata: bool = True,
    te_layout: str = "installed",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    weight_name: str = "peft_sd2.safetensors",
) -> WrittenLora:
    """SD2.x (768-v / 512-base share shapes) UNet + OpenCLIP-H TE (23 layers, 1024 wide).

    Cross-attention ``attn2.to_k`` down is (r, 1024); ``proj_in`` is Linear (not targeted).
    """
    return _write_peft_sd(
        directory,
        family="sd2",
        rank=rank,
        alpha=alpha,
        train_unet=True,
        train_text_encoder=train_text_encoder,
        key_style=key_style,
        adapter_metadata=adapter_metadata,
        te_layout=te_layout,
        dtype=dtype,
        seed=seed,
        weight_name=weight_name,
    )


def write_peft_sdxl(
    directory: str | Path,
    rank: int = 4,
    *,
    alpha: float | None = None,
    train_text_encoder: bool = True,
    key_style: str = "diffusers",
    adapter_metadata: bool = True,
    te_layout: str = "installed",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    weight_name: str = "peft_sdxl.safetensors",
) -> WrittenLora:
    """SDXL UNet + CLIP-L + OpenCLIP-bigG LoRA as ``train_dreambooth_lora_sdxl.py`` saves it.

    ``StableDiffusionXLPipeline.save_lora_weights(unet_lora_layers=..., text_encoder_lora_layers=...,
    text_encoder_2_lora_layers=...)`` with diffusers-converted keys; prefixes ``unet.``,
    ``text_encoder.``, ``text_encoder_2.``.  UNet 560 modules (70 transformer blocks x 2 attn x 4),
    TE1 48, TE2 128.
    """
    return _write_peft_sd(
        directory,
        family="sdxl",
        rank=rank,
        alpha=alpha,
        train_unet=True,
        train_text_encoder=train_text_encoder,
        key_style=key_style,
        adapter_metadata=adapter_metadata,
        te_layout=te_layout,
        dtype=dtype,
        seed=seed,
        weight_name=weight_name,
    )


def write_diffusers_kohya_sdxl(
    directory: str | Path,
    rank: int = 4,
    *,
    train_text_encoder: bool = False,
    te_layout: str = "installed",
    seed: int = 0,
    weight_name: str = "diffusers_kohya_sdxl.safetensors",
) -> WrittenLora:
    """SDXL LoRA exported by ``train_dreambooth_lora_sdxl.py --output_kohya_format``.

    The script saves the diffusers file, reloads it, and runs
    ``convert_all_state_dict_to_peft`` -> ``convert_state_dict_to_kohya`` -> ``safetensors.save_file``
    (no metadata at all).  Result: kohya prefixes with *diffusers* UNet paths (not SGM
    ``input_blocks``): ``lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight``
    (4, 2048), ``lora_te1_<path>``, ``lora_te2_text_model_<path>``, and an **int64** ``.alpha``
    equal to the rank (``torch.tensor(len(lora_down))``).

    With ``train_text_encoder=True`` the real script output is malformed for the UNet: the mixed
    file (TE ``lora_linear_layer`` + UNet ``lora.down`` keys) is detected as DIFFUSERS, whose
    mapping only renames ``lora_linear_layer``, so UNet keys come out as
    ``lora_unet_<path>_to_k_lora.down.weight`` / ``_lora.up.weight`` with **no alpha**; TE keys are
    correct (``lora_te1_<path>.lora_down.weight`` + ``.alpha``).  That is written as-is.
    """
    from diffusers.utils import convert_all_state_dict_to_peft, convert_state_dict_to_kohya
    from safetensors.torch import load_file, save_file

    with tempfile.TemporaryDirectory() as tmp:
        base = write_peft_sdxl(
            tmp,
            rank,
            train_text_encoder=train_text_encoder,
            te_layout=te_layout,
            adapter_metadata=False,
            seed=seed,
            weight_name="pytorch_lora_weights.safetensors",
        )
        lora_state_dict = load_file(str(base.path))
    kohya_state_dict = convert_state_dict_to_kohya(convert_all_state_dict_to_peft(lora_state_dict))
    path = Path(directory) / weight_name
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(kohya_state_dict, str(path))
    return _result(
        path,
        writer=_versions("peft", "diffusers", "transformers") + " (convert_state_dict_to_kohya)",
        family="sdxl",
        variant="malformed_unet_keys" if train_text_encoder else None,
        algorithm="lora",
        rank=rank,
        alpha=float(rank),
        expected_module_count=base.expected_module_count,
        options=dict(te_layout=te_layout, train_text_encoder=train_text_encoder),
    )


def write_peft_dora(
    directory: str | Path,
    rank: int = 4,
    *,
    family: str = "sdxl",
    alpha: float | None = None,
    key_style: str = "diffusers",
    adapter_metadata: bool = True,
    dtype: torch.dtype | None = None,
    seed: int = 0,
    weight_name: str | None = None,
) -> WrittenLora:
    """PEFT DoRA (``LoraConfig(use_dora=True)``).

    ``family="sdxl"``: UNet only, the ``train_dreambooth_lora_sdxl.py --use_dora`` path; keys
    ``unet.<path>.to_q.lora.down.weight`` / ``.lora.up.weight`` plus
    ``unet.<path>.to_q.lora_magnitude_vector`` (shape (out,), no ``.weight`` suffix).
    ``family="flux"``: transformer, raw PEFT keys (``...lora_A.weight``, ``...lora_magnitude_vector``).
    PEFT computes the magnitude from the (meta) base weight; it is replaced by random positive
    values like every other adapter tensor.
    """
    weight_name = weight_name or f"peft_dora_{family}.safetensors"
    if family == "sdxl":
        return _write_peft_sd(
            directory,
            family="sdxl",
            rank=rank,
            alpha=alpha,
            train_unet=True,
            train_text_encoder=False,
            key_style=key_style,
            adapter_metadata=adapter_metadata,
            te_layout="installed",
            dtype=dtype or torch.float32,
            seed=seed,
            weight_name=weight_name,
            use_dora=True,
        )
    if family == "flux":
        return write_peft_flux(
            directory,
            rank,
            alpha=alpha,
            adapter_metadata=adapter_metadata,
            dtype=dtype or torch.bfloat16,
            seed=seed,
            weight_name=weight_name,
            use_dora=True,
        )
    raise ValueError(f"write_peft_dora supports family 'sdxl' or 'flux', not {family!r}")


# --------------------------------------------------------------------------------------
# PEFT / diffusers writers: DiT transformers


def _write_peft_transformer(
    directory: str | Path,
    *,
    model_cls_name: str,
    pipeline_cls_name: str,
    config: dict[str, Any],
    family: str,
    variant: str | None,
    rank: int,
    alpha: float | None,
    targets: list[str],
    adapter_metadata: bool,
    dtype: torch.dtype,
    seed: int,
    weight_name: str,
    use_dora: bool = False,
) -> WrittenLora:
    import diffusers

    model_cls = getattr(diffusers, model_cls_name)
    pipeline_cls = getattr(diffusers, pipeline_cls_name)
    alpha = float(2 * rank if alpha is None else alpha)
    model = _build_meta(lambda: model_cls(**config))
    state, meta, count = _peft_prepare(
        model, rank=rank, alpha=alpha, targets=targets, dtype=dtype, seed=seed, use_dora=use_dora
    )
    kwargs: dict[str, Any] = {"transformer_lora_layers": state}
    if adapter_metadata:
        kwargs["transformer_lora_adapter_metadata"] = meta
    pipeline_cls.save_lora_weights(str(directory), weight_name=weight_name, safe_serialization=True, **kwargs)
    return _result(
        Path(directory) / weight_name,
        writer=_versions("peft", "diffusers"),
        family=family,
        variant=variant,
        algorithm="dora" if use_dora else "lora",
        rank=rank,
        alpha=alpha,
        expected_module_count=count,
        options=dict(
            targets=list(targets), adapter_metadata=adapter_metadata, pipeline=pipeline_cls_name, dtype=str(dtype)
        ),
    )


def write_peft_sd3(
    directory: str | Path,
    rank: int = 4,
    *,
    variant: str = "3-medium",
    alpha: float | None = None,
    targets: list[str] | None = None,
    adapter_metadata: bool = True,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    weight_name: str | None = None,
) -> WrittenLora:
    """SD3 / SD3.5 ``SD3Transformer2DModel`` LoRA, ``train_dreambooth_lora_sd3.py`` targets.

    Variants: ``"3-medium"`` (24 joint blocks, hidden 1536), ``"3.5-medium"`` (same + ``attn2`` in
    blocks 0-12, not targeted by the default list), ``"3.5-large"`` (38 blocks, hidden 2432).
    Saved by ``StableDiffusion3Pipeline.save_lora_weights``; raw PEFT keys ``transformer.<path>.lora_A.weight``.
    The last block is ``context_pre_only`` (no ``to_add_out``), so 24 blocks give 24*8-1 = 191 modules.
    Default ``alpha = 2*rank`` and bf16 (the script saves in ``weight_dtype`` unless ``--upcast_before_saving``).
    """
    return _write_peft_transformer(
        directory,
        model_cls_name="SD3Transformer2DModel",
        pipeline_cls_name="StableDiffusion3Pipeline",
        config=SD3_CONFIGS[variant],
        family="sd3",
        variant=variant,
        rank=rank,
        alpha=alpha,
        targets=targets or SD3_TARGETS,
        adapter_metadata=adapter_metadata,
        dtype=dtype,
        seed=seed,
        weight_name=weight_name or f"peft_sd{variant}.safetensors",
    )


def write_peft_flux(
    directory: str | Path,
    rank: int = 4,
    *,
    variant: str = "dev",
    alpha: float | None = None,
    targets: list[str] | None = None,
    adapter_metadata: bool = True,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    weight_name: str | None = None,
    use_dora: bool = False,
) -> WrittenLora:
    """Flux.1 ``FluxTransformer2DModel`` (19 double, 38 single blocks, 3072 wide) LoRA.

    Targets: ``train_dreambooth_lora_flux.py`` defaults plus ``proj_mlp`` and ``proj_out`` (so
    single blocks are fully covered; ``proj_out`` also matches the final ``proj_out`` (64, 3072)).
    19 double x 12 + 38 single x 5 + 1 = 419 modules.  Saved by ``FluxPipeline.save_lora_weights`` with
    ``transformer_lora_adapter_metadata`` as the script does via ``_collate_lora_metadata``.
    ``variant``: ``"dev"`` (guidance embedder) or ``"schnell"`` (identical LoRA shapes).
    """
    return _write_peft_transformer(
        directory,
        model_cls_name="FluxTransformer2DModel",
        pipeline_cls_name="FluxPipeline",
        config=FLUX_CONFIGS[variant],
        family="flux",
        variant=variant,
        rank=rank,
        alpha=alpha,
        targets=targets or FLUX_TARGETS,
        adapter_metadata=adapter_metadata,
        dtype=dtype,
        seed=seed,
        weight_name=weight_name or f"peft_flux_{variant}.safetensors",
        use_dora=use_dora,
    )


def write_peft_wan(
    directory: str | Path,
    rank: int = 4,
    variant: str = "1.3b",
    *,
    alpha: float | None = None,
    targets: list[str] | None = None,
    adapter_metadata: bool = True,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    weight_name: str | None = None,
) -> WrittenLora:
    """Wan 2.x ``WanTransformer3DModel`` LoRA saved by ``WanPipeline.save_lora_weights``.

    Variants: ``"1.3b"`` (dim 1536, 30 blocks, ffn 8960), ``"14b"`` (5120, 40, 13824; also
    Wan2.2 A14B), ``"i2v-14b"`` (14B + ``attn2.add_k_proj/add_v_proj`` image branch = k_img/v_img),
    ``"ti2v-5b"`` (Wan2.2 5B: 3072, 30, 14336).  Targets self/cross attention q/k/v/out, the
    i2v image k/v and the FFN: 10 modules per block (12 for i2v).  diffusers has no official Wan
    training script; this is the module list musubi/ai-toolkit style trainers use.
    """
    return _write_peft_transformer(
        directory,
        model_cls_name="WanTransformer3DModel",
        pipeline_cls_name="WanPipeline",
        config=WAN_CONFIGS[variant],
        family="wan",
        variant=variant,
        rank=rank,
        alpha=alpha,
        targets=targets or WAN_TARGETS,
        adapter_metadata=adapter_metadata,
        dtype=dtype,
        seed=seed,
        weight_name=weight_name or f"peft_wan_{variant}.safetensors",
    )


def write_peft_hunyuan_video(
    directory: str | Path,
    rank: int = 4,
    *,
    alpha: float | None = None,
    targets: list[str] | None = None,
    adapter_metadata: bool = True,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    weight_name: str = "peft_hunyuan_video.safetensors",
) -> WrittenLora:
    """HunyuanVideo ``HunyuanVideoTransformer3DModel`` (20 double, 40 single, 2 refiner blocks).

    finetrainers' default targets ``to_q/to_k/to_v/to_out.0``: suffix matching also hits the
    token refiner (``context_embedder.token_refiner.refiner_blocks.N.attn.to_q``).  Single
    blocks have no ``to_out``: 20*4 + 40*3 + 2*4 = 208 modules.
    Saved by ``HunyuanVideoPipeline.save_lora_weights``.
    """
    return _write_peft_transformer(
        directory,
        model_cls_name="HunyuanVideoTransformer3DModel",
        pipeline_cls_name="HunyuanVideoPipeline",
        config=HUNYUAN_VIDEO_CONFIG,
        family="hunyuan_video",
        variant=None,
        rank=rank,
        alpha=alpha,
        targets=targets or HUNYUAN_VIDEO_TARGETS,
        adapter_metadata=adapter_metadata,
        dtype=dtype,
        seed=seed,
        weight_name=weight_name,
    )


# --------------------------------------------------------------------------------------
# LyCORIS (kohya wrapper, SD1.x / SD2.x UNet + TE)

# Classic "full" preset (what LyCORIS' "full" meant before the DiT classes were added).
_PRESET_FULL: dict[str, Any] = dict(
    enable_conv=True,
    unet_target_module=["Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D"],
    unet_target_name=["conv_in", "conv_out", "time_embedding.linear_1", "time_embedding.linear_2"],
    text_encoder_target_module=["CLIPAttention", "CLIPMLP"],
    text_encoder_target_name=[],
)
_PRESET_LINEAR = dict(_PRESET_FULL, enable_conv=False)  # 1x1 convs (proj_in/out in SD1) still adapted
_PRESET_ATTN_MLP: dict[str, Any] = dict(
    enable_conv=False,
    unet_target_module=["Transformer2DModel"],
    unet_target_name=[],
    text_encoder_target_module=["CLIPAttention", "CLIPMLP"],
    text_encoder_target_name=[],
)
# Built-in "ia3" targets, as fnmatch patterns so they match full module paths.
_PRESET_IA3: dict[str, Any] = dict(
    enable_conv=False,
    use_fnmatch=True,
    unet_target_module=[],
    unet_target_name=["*to_k", "*to_v", "*ff.net.2"],
    text_encoder_target_module=[],
    text_encoder_target_name=["*k_proj", "*v_proj", "*mlp.fc2"],
    name_algo_map={"*ff.net.2": {"train_on_input": True}, "*mlp.fc2": {"train_on_input": True}},
)
# Full (diff) weights are as big as the base layers: keep to one attention block + one TE projection.
_PRESET_FULL_DIFF_SMALL: dict[str, Any] = dict(
    enable_conv=False,
    use_fnmatch=True,
    unet_target_module=[],
    unet_target_name=["down_blocks.1.attentions.0.transformer_blocks.0.attn1.*"],
    text_encoder_target_module=[],
    text_encoder_target_name=["*layers.0.self_attn.q_proj"],
)
# BOFT blocks are (m, n, bs, bs) with bs >= 10 for SD widths: cross-attention k/v only.
_PRESET_BOFT_SMALL: dict[str, Any] = dict(
    enable_conv=False,
    use_fnmatch=True,
    unet_target_module=[],
    unet_target_name=["*attn2.to_k", "*attn2.to_v"],
    text_encoder_target_module=[],
    text_encoder_target_name=["*layers.0.self_attn.q_proj"],
)

# name -> (LyCORIS algo, default preset, default rank, extra network args)
LYCORIS_ALGOS: dict[str, tuple[str, dict[str, Any], int, dict[str, Any]]] = {
    "lora": ("lora", _PRESET_LINEAR, 4, {}),
    "locon": ("locon", _PRESET_FULL, 4, {}),
    "loha": ("loha", _PRESET_FULL, 4, {}),
    "lokr": ("lokr", _PRESET_FULL, 4, {}),
    "dora": ("locon", _PRESET_ATTN_MLP, 4, {"dora_wd": True}),
    "ia3": ("ia3", _PRESET_IA3, 4, {}),
    "glora": ("glora", _PRESET_FULL, 4, {}),
    "full": ("full", _PRESET_FULL_DIFF_SMALL, 4, {}),
    "oft": ("diag-oft", _PRESET_FULL, 4, {}),
    "boft": ("boft", _PRESET_BOFT_SMALL, 16, {}),
}

_LYCORIS_CLASS_ATTRS = (
    "ENABLE_CONV",
    "UNET_TARGET_REPLACE_MODULE",
    "UNET_TARGET_REPLACE_NAME",
    "TEXT_ENCODER_TARGET_REPLACE_MODULE",
    "TEXT_ENCODER_TARGET_REPLACE_NAME",
    "MODULE_ALGO_MAP",
    "NAME_ALGO_MAP",
    "USE_FNMATCH",
    "TARGET_EXCLUDE_NAME",
)


@contextlib.contextmanager
def _lycoris_class_state() -> Iterator[None]:
    """``create_network`` applies presets by mutating class attributes: undo it afterwards."""
    from lycoris.kohya import LycorisNetworkKohya

    saved = {k: copy.deepcopy(getattr(LycorisNetworkKohya, k)) for k in _LYCORIS_CLASS_ATTRS}
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(LycorisNetworkKohya, k, v)


def write_lycoris(
    directory: str | Path,
    algo: str = "locon",
    *,
    rank: int | None = None,
    alpha: float = 1.0,
    conv_rank: int | None = None,
    conv_alpha: float | None = None,
    use_tucker: bool = False,
    factor: int = -1,
    decompose_both: bool = False,
    full_matrix: bool = False,
    weight_decompose: bool | None = None,
    wd_on_output: bool = True,
    rescaled: bool = False,
    constraint: float = 0.0,
    preset: dict[str, Any] | str | None = None,
    family: str = "sd1",
    train_text_encoder: bool | None = None,
    te_layout: str = "text_model",
    dtype: torch.dtype | None = torch.float16,
    metadata: dict[str, str] | None = None,
    seed: int = 0,
    weight_name: str | None = None,
    train_norm: bool = False,
) -> WrittenLora:
    """LyCORIS network on the real SD1.5 (``family="sd1"``) or SD2.x UNet + CLIP text encoder.

    ``algo``: ``lora`` (LoCon module, linear + 1x1 conv), ``locon`` (+3x3 conv), ``loha``, ``lokr``,
    ``dora`` (= locon with ``dora_wd``; attention/MLP only), ``ia3``, ``glora``, ``full`` (diff),
    ``oft`` (LyCORIS ``diag-oft``), ``boft``.  Options map to sd-scripts ``--network_args``:
    ``use_tucker`` (conv Tucker / CP: ``lora_mid``, ``hada_t1/t2``, ``lokr_t2``), ``factor``,
    ``decompose_both`` (``lokr_w1_a/b``), ``full_matrix`` (``lokr_w1`` + ``lokr_w2`` full; LyCORIS
    then writes alpha = rank, i.e. scale 1), ``weight_decompose`` (``dora_wd``: adds ``dora_scale``
    to lora/locon/loha/lokr), ``rescaled``/``constraint`` (OFT/BOFT).

    Network is created by ``lycoris.kohya.create_network(1.0, rank, alpha, None, te, unet, ...)``
    (the call sd-scripts makes), attached with ``apply_to`` and written by ``save_weights`` in
    ``dtype`` (sd-scripts' ``--save_precision``; fp16 default).  Base weights are zero-stride CPU
    views (see ``_cheap_cpu_base``), so DoRA norms and full diffs are computed against a constant
    base; all adapter tensors are then replaced by seeded random values.

    Default presets (passed as TOML files, the way users pass ``preset=<file>``): see
    ``LYCORIS_ALGOS``.  ``full`` and ``boft`` use small target sets (their tensors scale with
    the base layer size).  ``te_layout="text_model"`` gives ``lora_te_text_model_encoder_layers_N_...``
    (transformers 4.x tree, which sd-scripts pins); ``"installed"`` gives what transformers 5
    yields, ``lora_te_encoder_layers_N_...``.
    """
    import lycoris.kohya as lycoris_kohya
    import toml
    from diffusers import UNet2DConditionModel

    if algo not in LYCORIS_ALGOS:
        raise ValueError(f"unknown LyCORIS algo {algo!r}; choose from {sorted(LYCORIS_ALGOS)}")
    lyco_algo, default_preset, default_rank, extra = LYCORIS_ALGOS[algo]
    rank = default_rank if rank is None else rank
    if train_text_encoder is None:
        train_text_encoder = algo != "boft"
    network_args: dict[str, Any] = dict(extra)
    if weight_decompose is not None:
        network_args["dora_wd"] = weight_decompose
    network_args.update(
        algo=lyco_algo,
        conv_dim=conv_rank if conv_rank is not None else rank,
        conv_alpha=conv_alpha if conv_alpha is not None else alpha,
        use_tucker=use_tucker,
        factor=factor,
        decompose_both=decompose_both,
        full_matrix=full_matrix,
        wd_on_output=wd_on_output,
        rescaled=rescaled,
        constraint=constraint,
    )
    if train_norm:  # LyCORIS' NormModule: w_norm/b_norm on every GroupNorm/LayerNorm of the targeted blocks
        network_args["train_norm"] = True

    unet_config = {"sd1": SD15_UNET_CONFIG, "sd2": SD2_UNET_CONFIG}[family]
    unet = _build_meta(lambda: UNet2DConditionModel(**unet_config))
    _cheap_cpu_base(unet)
    te = None
    if train_text_encoder:
        te = _clip_text_model(CLIP_L_CONFIG if family == "sd1" else OPENCLIP_H_CONFIG, te_layout=te_layout)
        _cheap_cpu_base(te)

    options = {k: v for k, v in network_args.items() if k != "algo"}
    variant_bits = [
        name
        for name, on in (
            ("tucker", use_tucker),
            ("decompose_both", decompose_both),
            ("full_matrix", full_matrix),
            ("dora", bool(network_args.get("dora_wd")) and algo != "dora"),
            ("rescaled", rescaled),
        )
        if on
    ]
    weight_name = weight_name or f"lycoris_{algo}{''.join('_' + b for b in variant_bits)}.safetensors"
    path = Path(directory) / weight_name
    path.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp, _lycoris_class_state():
        if isinstance(preset, str):
            preset_arg = preset  # built-in name or path to a TOML file
        else:
            preset_file = Path(tmp) / "preset.toml"
            preset_file.write_text(toml.dumps(preset if preset is not None else default_preset))
            preset_arg = str(preset_file)
        network = lycoris_kohya.create_network(
            1.0, rank, alpha, None, te, unet, preset=preset_arg, warn_on_unmatched=False, **network_args
        )
        network.apply_to(te, unet, apply_text_encoder=te is not None, apply_unet=True)
        count = len(network.loras)
        if count == 0:
            raise RuntimeError(f"LyCORIS created no modules for algo={algo!r} preset={preset_arg!r}")
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in network.named_parameters():
                p.copy_(_init_value(name, p.shape, rank, gen).to(p.dtype))
        network.save_weights(str(path), dtype, dict(metadata) if metadata else None)
    return _result(
        path,
        writer=f"{_versions('lycoris-lora')} (lycoris.kohya, algo={lyco_algo}) / {_versions('diffusers', 'transformers')}",
        family=family,
        variant="+".join(variant_bits) or None,
        algorithm=algo,
        rank=rank,
        alpha=None if algo in ("ia3", "full") else float(alpha),
        expected_module_count=count,
        options=dict(options, te_layout=te_layout, train_text_encoder=train_text_encoder, dtype=str(dtype)),
    )


# --------------------------------------------------------------------------------------
# Parametrisation table


def _named(name: str, fn: Callable[..., WrittenLora], **kwargs: Any) -> tuple[str, Callable[[Path], WrittenLora]]:
    def call(directory: Path) -> WrittenLora:
        return fn(directory, **kwargs)

    call.__name__ = f"write_{re.sub(r'[^0-9A-Za-z_]', '_', name)}"
    return name, call


ALL_WRITERS: list[tuple[str, Callable[[Path], WrittenLora]]] = [
    _named("peft_sd15", write_peft_sd15),
    _named("peft_sd15_unet", write_peft_sd15_unet),
    _named("peft_sd15_te", write_peft_sd15_te),
    _named(
        "peft_sd15_text_model_layout", write_peft_sd15, te_layout="text_model", weight_name="peft_sd15_tm.safetensors"
    ),
    _named("peft_sd15_peft_keys", write_peft_sd15, key_style="peft", weight_name="peft_sd15_peftkeys.safetensors"),
    _named("peft_sd2", write_peft_sd2),
    _named("peft_sdxl", write_peft_sdxl),
    _named("peft_sd3", write_peft_sd3),
    _named("peft_sd35_large", write_peft_sd3, variant="3.5-large"),
    _named("peft_flux", write_peft_flux),
    _named("peft_wan_1.3b", write_peft_wan, variant="1.3b"),
    _named("peft_wan_i2v_14b", write_peft_wan, variant="i2v-14b"),
    _named("peft_hunyuan_video", write_peft_hunyuan_video),
    _named("peft_dora_sdxl", write_peft_dora),
    _named("diffusers_kohya_sdxl", write_diffusers_kohya_sdxl),
    _named(
        "diffusers_kohya_sdxl_with_te",
        write_diffusers_kohya_sdxl,
        train_text_encoder=True,
        weight_name="diffusers_kohya_sdxl_te.safetensors",
    ),
    _named("peft_dora_flux", write_peft_dora, family="flux"),
    _named("lycoris_lora", write_lycoris, algo="lora"),
    _named("lycoris_locon", write_lycoris, algo="locon"),
    _named("lycoris_locon_tucker", write_lycoris, algo="locon", use_tucker=True),
    _named("lycoris_loha", write_lycoris, algo="loha"),
    _named("lycoris_loha_tucker", write_lycoris, algo="loha", use_tucker=True),
    _named("lycoris_lokr", write_lycoris, algo="lokr"),
    _named("lycoris_lokr_full_matrix", write_lycoris, algo="lokr", full_matrix=True),
    _named("lycoris_lokr_decompose_both", write_lycoris, algo="lokr", decompose_both=True),
    _named("lycoris_lokr_tucker", write_lycoris, algo="lokr", use_tucker=True, factor=4),
    _named("lycoris_lokr_dora", write_lycoris, algo="lokr", weight_decompose=True, preset=_PRESET_ATTN_MLP),
    _named("lycoris_dora", write_lycoris, algo="dora"),
    _named("lycoris_ia3", write_lycoris, algo="ia3"),
    _named("lycoris_glora", write_lycoris, algo="glora"),
    _named("lycoris_full", write_lycoris, algo="full"),
    _named("lycoris_oft", write_lycoris, algo="oft"),
    _named("lycoris_boft", write_lycoris, algo="boft"),
    _named(
        "lycoris_locon_te_installed",
        write_lycoris,
        algo="locon",
        te_layout="installed",
        preset=_PRESET_ATTN_MLP,
        weight_name="lycoris_locon_te_installed.safetensors",
    ),
    _named("lycoris_locon_sd2", write_lycoris, algo="locon", family="sd2", weight_name="lycoris_locon_sd2.safetensors"),
]


def describe(written: WrittenLora) -> str:
    """One-line summary (used by the tests' failure messages)."""
    key = written.state_dict_keys[0] if written.state_dict_keys else "<none>"
    return json.dumps(
        {
            "file": written.path.name,
            "writer": written.writer,
            "modules": written.expected_module_count,
            "keys": len(written.state_dict_keys),
            "example": [key, list(written.shapes.get(key, ()))],
        }
    )
