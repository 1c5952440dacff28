"""Key normalisation: every naming convention → one canonical module path in ComfyUI's own key space.

Two steps. ``parse_module_key`` strips the prefix (``lora_unet_``, ``transformer.``, ``diffusion_model.``, …), tells
which component it targets (unet / te / te1 / te2 / te3) and turns kohya's ``_`` spelling back into dotted module
paths with a vocabulary of compound names; the result is still in the file's own naming (diffusers or native).
``canonical_target`` then maps that path, knowing the family, to ComfyUI's state-dict key (``diffusion_model.…``,
``clip_l.transformer.…``, ``t5xxl.transformer.…``) plus a row slice where fused q/k/v were trained apart; the family's
record (:mod:`.families`) says which conversion (its architecture) and which text encoders apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .families import FAMILIES, DoubleSingleDiT, MMDiT, SdUnet, WanDiT

# Compound module names that contain "_" (longest match wins when re-dotting kohya keys).
VOCAB = frozenset("""
down_blocks up_blocks mid_block transformer_blocks single_transformer_blocks to_q to_k to_v to_out proj_in proj_out
time_emb_proj conv_shortcut conv_in conv_out conv_norm_out time_embedding add_embedding linear_1 linear_2
input_blocks middle_block output_blocks in_layers out_layers emb_layers skip_connection time_embed label_emb
text_model self_attn q_proj k_proj v_proj out_proj final_layer_norm layer_norm1 layer_norm2 text_projection
token_embedding position_embedding SelfAttention DenseReluDense wi_0 wi_1 relative_attention_bias EncDecAttention
double_blocks single_blocks img_attn txt_attn img_mlp txt_mlp img_mod txt_mod img_in txt_in time_in vector_in
guidance_in in_layer out_layer final_layer adaLN_modulation key_norm query_norm
add_q_proj add_k_proj add_v_proj to_add_out ff_context norm1_context proj_mlp norm_out x_embedder context_embedder
time_text_embed timestep_embedder text_embedder guidance_embedder norm_q norm_k norm_added_q norm_added_k
joint_blocks x_block context_block t_embedder y_embedder pos_embed
cross_attn k_img v_img text_embedding time_projection img_emb patch_embedding condition_embedder time_proj
time_embedder image_embedder
img_attn_qkv img_attn_proj txt_attn_qkv txt_attn_proj img_attn_q_norm img_attn_k_norm txt_attn_q_norm
txt_attn_k_norm individual_token_refiner token_refiner self_attn_qkv self_attn_proj c_embedder t_embedder
""".split())
_MAX_COMPOUND = max(len(v.split("_")) for v in VOCAB)

# prefix -> (component, underscored?) ; checked in order, longest first within the table.
_PREFIXES: list[tuple[str, str, bool]] = [
    ("lora_unet__", "unet", True),  # Wan-Fun double underscore
    ("lora_unet_", "unet", True),
    ("lora_te1_", "te1", True), ("lora_te2_", "te2", True), ("lora_te3_", "te3", True), ("lora_te_", "te", True),
    ("lora_transformer_", "unet", True),  # OneTrainer
    ("lycoris_", "unet", True),  # SimpleTuner LyCORIS
    ("oft_unet_", "unet", True),
    ("model.diffusion_model.", "unet", False), ("diffusion_model.", "unet", False),
    ("base_model.model.", "unet", False), ("transformer.", "unet", False), ("unet.", "unet", False),
    ("text_encoders.clip_l.transformer.", "te1", False), ("text_encoders.clip_g.transformer.", "te2", False),
    ("text_encoders.t5xxl.transformer.", "te3", False),
    ("clip_l.transformer.", "te1", False), ("clip_g.transformer.", "te2", False), ("clip_h.transformer.", "te", False),
    ("t5xxl.transformer.", "te3", False),
    ("text_encoder_2.", "te2", False), ("text_encoder_3.", "te3", False), ("text_encoder.", "te", False),
]
_UNSUPPORTED_PREFIXES = ("lora_prior_unet_", "lora_prior_te_")


@dataclass(frozen=True)
class RawPath:
    """A module key split into the component it targets and a dotted path in the file's own naming."""

    component: str  # unet | te | te1 | te2 | te3 | unknown
    path: str
    convention: str  # kohya | dotted


@dataclass(frozen=True)
class Target:
    """Canonical ComfyUI state-dict key (without ``.weight``) and an optional row slice of a fused weight."""

    key: str
    offset: int | None = None
    length: int | None = None

    def __str__(self) -> str:
        return self.key if self.offset is None else f"{self.key}[{self.offset}:{self.offset + (self.length or 0)}]"


@lru_cache(maxsize=1 << 16)
def redot(underscored: str) -> str:
    """``down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q`` → ``down_blocks.0.attentions.0.…attn1.to_q``."""
    tokens = underscored.split("_")
    out: list[str] = []
    i = 0
    while i < len(tokens):
        for j in range(min(len(tokens), i + _MAX_COMPOUND), i + 1, -1):
            if "_".join(tokens[i:j]) in VOCAB:
                out.append("_".join(tokens[i:j]))
                i = j
                break
        else:
            if tokens[i]:
                out.append(tokens[i])
            i += 1
    return ".".join(out)


@lru_cache(maxsize=1 << 16)
def parse_module_key(key: str) -> RawPath:
    if key.startswith(_UNSUPPORTED_PREFIXES):
        return RawPath("unknown", key, "kohya")
    for prefix, component, underscored in _PREFIXES:
        if key.startswith(prefix):
            rest = key[len(prefix):]
            if underscored:
                return RawPath(component, redot(rest), "kohya")
            if component == "unet" and rest.startswith(("text_encoder.", "text_encoder_2.")):  # raw PEFT TE saves
                return parse_module_key(rest)
            return RawPath(component, _strip_processor(rest), "dotted")
    # bare keys: DiffSynth/XLabs/WAN without prefix, ComfyUI TE names
    return RawPath("unet", _strip_processor(key), "dotted")


def _strip_processor(path: str) -> str:
    # old diffusers processors: "<attn>.processor.to_q" / ".processor.to_out" ; XLabs keeps "processor.qkv_lora1"
    path = re.sub(r"\.processor\.to_out$", ".to_out.0", path)
    return re.sub(r"\.processor\.(to_[qkv])$", r".\1", path)


# ---- canonicalisation per family -----------------------------------------------------------------------------
_RESNET_INNER = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
                 "conv_shortcut": "skip_connection", "norm1": "in_layers.0", "norm2": "out_layers.0"}
_SD1_UP_ATTENTION_LEVELS = frozenset({1, 2, 3})  # for a family that is not an SD UNet of the registry


def diffusers_unet_to_ldm(path: str, family: str) -> str:
    """Diffusers UNet2DConditionModel names → ldm/SGM names (what ComfyUI holds), the A1111 conversion."""
    m = re.match(r"down_blocks\.(\d+)\.(attentions|resnets)\.(\d+)\.?(.*)$", path)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        return _join(f"input_blocks.{1 + 3 * i + j}.{1 if kind == 'attentions' else 0}", _inner(kind, rest))
    m = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv(.*)$", path)
    if m:
        return f"input_blocks.{3 + 3 * int(m[1])}.0.op{m[2]}"
    m = re.match(r"up_blocks\.(\d+)\.(attentions|resnets)\.(\d+)\.?(.*)$", path)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        return _join(f"output_blocks.{3 * i + j}.{1 if kind == 'attentions' else 0}", _inner(kind, rest))
    m = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv(.*)$", path)
    if m:
        i = int(m[1])
        slot = 2 if i in _up_attention_levels(family) else 1
        return f"output_blocks.{2 + 3 * i}.{slot}.conv{m[2]}"
    m = re.match(r"mid_block\.(attentions|resnets)\.(\d+)\.?(.*)$", path)
    if m:
        kind, j, rest = m[1], int(m[2]), m[3]
        idx = 1 if kind == "attentions" else 2 * j
        return _join(f"middle_block.{idx}", _inner(kind, rest))
    for src, dst in (("conv_in", "input_blocks.0.0"), ("conv_out", "out.2"), ("conv_norm_out", "out.0"),
                     ("time_embedding.linear_1", "time_embed.0"), ("time_embedding.linear_2", "time_embed.2"),
                     ("add_embedding.linear_1", "label_emb.0.0"), ("add_embedding.linear_2", "label_emb.0.2")):
        if path == src or path.startswith(src + "."):
            return dst + path[len(src):]
    return path


def _up_attention_levels(family: str) -> frozenset[int]:
    """Levels of the family's diffusers UNet whose up block has attention (where the upsampler sits)."""
    fam = FAMILIES.get(family)
    return fam.architecture.up_attention_levels if fam and isinstance(fam.architecture, SdUnet) \
        else _SD1_UP_ATTENTION_LEVELS


def _inner(kind: str, rest: str) -> str:
    if kind == "resnets":
        return _RESNET_INNER.get(rest, rest)
    return rest


def _join(a: str, b: str) -> str:
    return f"{a}.{b}" if b else a


_FLUX_DOUBLE = {
    "attn.to_q": ("img_attn.qkv", 0), "attn.to_k": ("img_attn.qkv", 1), "attn.to_v": ("img_attn.qkv", 2),
    "attn.add_q_proj": ("txt_attn.qkv", 0), "attn.add_k_proj": ("txt_attn.qkv", 1), "attn.add_v_proj": ("txt_attn.qkv", 2),
    "attn.to_out.0": ("img_attn.proj", None), "attn.to_add_out": ("txt_attn.proj", None),
    "ff.net.0.proj": ("img_mlp.0", None), "ff.net.2": ("img_mlp.2", None),
    "ff_context.net.0.proj": ("txt_mlp.0", None), "ff_context.net.2": ("txt_mlp.2", None),
    "norm1.linear": ("img_mod.lin", None), "norm1_context.linear": ("txt_mod.lin", None),
}
_FLUX_SINGLE = {"attn.to_q": ("linear1", 0), "attn.to_k": ("linear1", 1), "attn.to_v": ("linear1", 2),
                "proj_mlp": ("linear1", 3), "proj_out": ("linear2", None), "norm.linear": ("modulation.lin", None)}
_FLUX_GLOBAL = {"x_embedder": "img_in", "context_embedder": "txt_in", "proj_out": "final_layer.linear",
                "norm_out.linear": "final_layer.adaLN_modulation.1",
                "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
                "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
                "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
                "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
                "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
                "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer"}
_XLABS = {"processor.qkv_lora1": "img_attn.qkv", "processor.proj_lora1": "img_attn.proj",
          "processor.qkv_lora2": "txt_attn.qkv", "processor.proj_lora2": "txt_attn.proj"}
# HunyuanVideo original spellings → ComfyUI's (Flux-style) names
_HUNYUAN_SPELLING = [(r"\.(img|txt)_attn_(qkv|proj)$", r".\1_attn.\2"), (r"\.(img|txt)_mlp\.fc1$", r".\1_mlp.0"),
                     (r"\.(img|txt)_mlp\.fc2$", r".\1_mlp.2"), (r"_mod\.linear$", "_mod.lin"),
                     (r"\.modulation\.linear$", ".modulation.lin")]
_SD3_JOINT = {"attn.to_q": ("x_block.attn.qkv", 0), "attn.to_k": ("x_block.attn.qkv", 1),
              "attn.to_v": ("x_block.attn.qkv", 2), "attn.add_q_proj": ("context_block.attn.qkv", 0),
              "attn.add_k_proj": ("context_block.attn.qkv", 1), "attn.add_v_proj": ("context_block.attn.qkv", 2),
              "attn.to_out.0": ("x_block.attn.proj", None), "attn.to_add_out": ("context_block.attn.proj", None),
              "attn2.to_q": ("x_block.attn2.qkv", 0), "attn2.to_k": ("x_block.attn2.qkv", 1),
              "attn2.to_v": ("x_block.attn2.qkv", 2), "attn2.to_out.0": ("x_block.attn2.proj", None),
              "ff.net.0.proj": ("x_block.mlp.fc1", None), "ff.net.2": ("x_block.mlp.fc2", None),
              "ff_context.net.0.proj": ("context_block.mlp.fc1", None),
              "ff_context.net.2": ("context_block.mlp.fc2", None),
              "norm1.linear": ("x_block.adaLN_modulation.1", None),
              "norm1_context.linear": ("context_block.adaLN_modulation.1", None)}
_SD3_GLOBAL = {"pos_embed.proj": "x_embedder.proj", "context_embedder": "context_embedder",
               "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
               "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2",
               "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
               "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2",
               "norm_out.linear": "final_layer.adaLN_modulation.1", "proj_out": "final_layer.linear"}
_WAN_BLOCK = {"attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
              "attn1.to_out.0": "self_attn.o", "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k",
              "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o", "attn2.add_k_proj": "cross_attn.k_img",
              "attn2.add_v_proj": "cross_attn.v_img", "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2"}
_WAN_GLOBAL = {"condition_embedder.text_embedder.linear_1": "text_embedding.0",
               "condition_embedder.text_embedder.linear_2": "text_embedding.2",
               "condition_embedder.time_embedder.linear_1": "time_embedding.0",
               "condition_embedder.time_embedder.linear_2": "time_embedding.2",
               "condition_embedder.time_proj": "time_projection.1", "proj_out": "head.head",
               "patch_embedding": "patch_embedding"}


def _sliced(base: str, part: int | None, out_rows: int, width: int) -> Target:
    if part is None:
        return Target(base)
    return Target(base, offset=part * width, length=out_rows)


@lru_cache(maxsize=1 << 16)
def canonical_target(raw: RawPath, family: str, out_rows: int = 0, in_cols: int = 0) -> Target:
    """Map a parsed module path to ComfyUI's key for ``family``; paths nothing matches pass through unchanged."""
    if raw.component != "unet":
        return Target(_te_target(raw, family))
    path = raw.path
    fam = FAMILIES.get(family)
    arch = fam.architecture if fam else None
    if isinstance(arch, SdUnet):
        return Target("diffusion_model." + diffusers_unet_to_ldm(path, family))
    if isinstance(arch, DoubleSingleDiT):
        return Target("diffusion_model." + path) if _is_native_dit(path) else _dit_from_diffusers(path, out_rows,
                                                                                                   in_cols)
    if isinstance(arch, MMDiT):
        m = re.match(r"transformer_blocks\.(\d+)\.(.+)$", path)
        if m and m[2] in _SD3_JOINT:
            base, part = _SD3_JOINT[m[2]]
            return _sliced(f"diffusion_model.joint_blocks.{m[1]}.{base}", part, out_rows, in_cols)
        return Target("diffusion_model." + _replace_prefix(path, _SD3_GLOBAL))
    if isinstance(arch, WanDiT):
        m = re.match(r"blocks\.(\d+)\.(.+)$", path)
        if m and m[2] in _WAN_BLOCK:
            return Target(f"diffusion_model.blocks.{m[1]}.{_WAN_BLOCK[m[2]]}")
        return Target("diffusion_model." + _replace_prefix(path, _WAN_GLOBAL))
    return Target("diffusion_model." + path)


def _is_native_dit(path: str) -> bool:
    return path.startswith(("double_blocks.", "single_blocks.", "img_in", "txt_in", "time_in", "vector_in",
                            "guidance_in", "final_layer"))


def _dit_from_diffusers(path: str, out_rows: int, in_cols: int) -> Target:
    m = re.match(r"(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)$", path)
    if m:
        table = _FLUX_DOUBLE if m[1] == "transformer_blocks" else _FLUX_SINGLE
        where = "double_blocks" if m[1] == "transformer_blocks" else "single_blocks"
        if m[3] in table:
            base, part = table[m[3]]
            return _sliced(f"diffusion_model.{where}.{m[2]}.{base}", part, out_rows, in_cols)
    return Target("diffusion_model." + _replace_prefix(path, _FLUX_GLOBAL))


def _replace_prefix(path: str, table: dict[str, str]) -> str:
    """Rename the longest table entry that is ``path`` or a dotted prefix of it (HunyuanVideo's token refiner
    lives under ``context_embedder.…`` → ``txt_in.…``)."""
    for src in sorted(table, key=len, reverse=True):
        if path == src or path.startswith(src + "."):
            return table[src] + path[len(src):]
    return path


@lru_cache(maxsize=1 << 16)
def normalise_native_dit(path: str) -> str:
    """XLabs processors and HunyuanVideo spellings → ComfyUI's Flux-style names (applied before canonicalising)."""
    m = re.match(r"(double_blocks\.\d+)\.(processor\.\w+)$", path)
    if m and m[2] in _XLABS:
        return f"{m[1]}.{_XLABS[m[2]]}"
    m = re.match(r"(single_blocks\.\d+)\.processor\.(qkv|proj)$", path)
    if m:
        return f"{m[1]}.{'linear1' if m[2] == 'qkv' else 'linear2'}"
    for pattern, repl in _HUNYUAN_SPELLING:
        path = re.sub(pattern, repl, path)
    return path


_TE_DEFAULT = {"te": "clip_l", "te1": "clip_l", "te2": "clip_g", "te3": "t5xxl"}  # a family without its own map


def _te_target(raw: RawPath, family: str) -> str:
    path = raw.path
    if path.startswith("encoder.block.") or ".SelfAttention." in path or ".DenseReluDense." in path:
        comp = "t5xxl"
    else:
        fam = FAMILIES.get(family)
        encoders = fam.text_encoders if fam else {}
        comp = encoders.get(raw.component, _TE_DEFAULT.get(raw.component, "clip_l"))
        if comp == "t5xxl":  # the family's T5 slot, but CLIP names: a CLIP-G style encoder
            comp = "clip_g"
        if path.startswith("encoder.layers."):  # transformers 5 dropped the text_model level
            path = "text_model." + path
    return f"{comp}.transformer.{path}"
