"""Module tables for the sample-LoRA generator: real module names and real weight shapes per base-model family.

Every builder yields ``(native_path, ModuleShape)`` with the model's own dotted module path; :func:`module_shapes`
renders the paths in a file style (kohya ``lora_unet_…`` with ``_``, ComfyUI ``diffusion_model.…``, PEFT
``transformer.…``, …). Numbers follow /work/shared/reference/lora-formats.md (§1–§4) and were cross-checked against
diffusers' model classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .errors import UsageError


@dataclass(frozen=True)
class ModuleShape:
    """Shape of the base weight a LoRA module patches: (out, in) or (out, in, kh, kw) when ``is_conv``."""

    out_features: int
    in_features: int
    kernel: tuple[int, int] = (1, 1)
    is_conv: bool = False

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.is_conv:
            return (self.out_features, self.in_features, *self.kernel)
        return (self.out_features, self.in_features)

    @property
    def spatial(self) -> bool:
        """True for k×k convolutions with k > 1 (trained only by LoCon / ``conv=True``)."""
        return self.kernel != (1, 1)


Modules = Iterator[tuple[str, ModuleShape]]


def _lin(out: int, inp: int) -> ModuleShape:
    return ModuleShape(out, inp)


def _conv(out: int, inp: int, k: int = 3) -> ModuleShape:
    return ModuleShape(out, inp, (k, k), True)


# ---- SD1 / SD2 / SDXL UNets ------------------------------------------------------------------------------------
def _transformer(path: str, c: int, ctx: int, depth: int, linear_proj: bool) -> Modules:
    proj = _lin(c, c) if linear_proj else _conv(c, c, 1)
    yield f"{path}.proj_in", proj
    for k in range(depth):
        b = f"{path}.transformer_blocks.{k}"
        for attn, kv_in in (("attn1", c), ("attn2", ctx)):
            yield f"{b}.{attn}.to_q", _lin(c, c)
            yield f"{b}.{attn}.to_k", _lin(c, kv_in)
            yield f"{b}.{attn}.to_v", _lin(c, kv_in)
            yield f"{b}.{attn}.to_out.0", _lin(c, c)
        yield f"{b}.ff.net.0.proj", _lin(8 * c, c)  # GEGLU: 2 × 4c
        yield f"{b}.ff.net.2", _lin(c, 4 * c)
    yield f"{path}.proj_out", proj


def _resnet(path: str, cin: int, cout: int, temb: int = 1280) -> Modules:
    yield f"{path}.conv1", _conv(cout, cin)
    yield f"{path}.time_emb_proj", _lin(cout, temb)
    yield f"{path}.conv2", _conv(cout, cout)
    if cin != cout:
        yield f"{path}.conv_shortcut", _conv(cout, cin, 1)


def _diffusers_unet(ch: tuple[int, ...], attn: tuple[bool, ...], depth: tuple[int, ...], ctx: int,
                    linear_proj: bool, conv: bool) -> Modules:
    """diffusers ``UNet2DConditionModel`` names (kohya SD1/SD2, diffusers-named SDXL)."""
    n = len(ch)
    cin = ch[0]
    for i, c in enumerate(ch):
        for j in range(2):
            if conv:
                yield from _resnet(f"down_blocks.{i}.resnets.{j}", cin if j == 0 else c, c)
            if attn[i]:
                yield from _transformer(f"down_blocks.{i}.attentions.{j}", c, ctx, depth[i], linear_proj)
        if conv and i < n - 1:
            yield f"down_blocks.{i}.downsamplers.0.conv", _conv(c, c)
        cin = c
    if conv:
        yield from _resnet("mid_block.resnets.0", ch[-1], ch[-1])
    yield from _transformer("mid_block.attentions.0", ch[-1], ctx, depth[-1], linear_proj)
    if conv:
        yield from _resnet("mid_block.resnets.1", ch[-1], ch[-1])
    rch, rattn, rdepth = ch[::-1], attn[::-1], depth[::-1]
    prev = rch[0]
    for i, c in enumerate(rch):
        skip_in = rch[min(i + 1, n - 1)]
        for j in range(3):
            if conv:
                yield from _resnet(f"up_blocks.{i}.resnets.{j}", (prev if j == 0 else c) + (skip_in if j == 2 else c), c)
            if rattn[i]:
                yield from _transformer(f"up_blocks.{i}.attentions.{j}", c, ctx, rdepth[i], linear_proj)
        if conv and i < n - 1:
            yield f"up_blocks.{i}.upsamplers.0.conv", _conv(c, c)
        prev = c


def _ldm_res(path: str, cin: int, cout: int) -> Modules:
    yield f"{path}.in_layers.2", _conv(cout, cin)
    yield f"{path}.emb_layers.1", _lin(cout, 1280)
    yield f"{path}.out_layers.3", _conv(cout, cout)
    if cin != cout:
        yield f"{path}.skip_connection", _conv(cout, cin, 1)


def _sdxl_ldm(conv: bool) -> Modules:
    """SGM/ldm names as kohya writes SDXL (``input_blocks.4.1.transformer_blocks.0.attn2.to_k``)."""
    mult, depth, ctx = (1, 2, 4), (0, 2, 10), 2048
    chans, ch, idx = [320], 320, 1
    for level, m in enumerate(mult):
        for _ in range(2):
            if conv:
                yield from _ldm_res(f"input_blocks.{idx}.0", ch, 320 * m)
            ch = 320 * m
            if depth[level]:
                yield from _transformer(f"input_blocks.{idx}.1", ch, ctx, depth[level], True)
            chans.append(ch)
            idx += 1
        if level < len(mult) - 1:
            if conv:
                yield f"input_blocks.{idx}.0.op", _conv(ch, ch)
            chans.append(ch)
            idx += 1
    if conv:
        yield from _ldm_res("middle_block.0", ch, ch)
    yield from _transformer("middle_block.1", ch, ctx, depth[-1], True)
    if conv:
        yield from _ldm_res("middle_block.2", ch, ch)
    idx = 0
    for level in reversed(range(len(mult))):
        for i in range(3):
            skip = chans.pop()
            if conv:
                yield from _ldm_res(f"output_blocks.{idx}.0", ch + skip, 320 * mult[level])
            ch = 320 * mult[level]
            if depth[level]:
                yield from _transformer(f"output_blocks.{idx}.1", ch, ctx, depth[level], True)
            if conv and level and i == 2:
                yield f"output_blocks.{idx}.{2 if depth[level] else 1}.conv", _conv(ch, ch)
            idx += 1


def _clip(width: int, mlp: int, layers: int) -> Modules:
    for i in range(layers):
        p = f"text_model.encoder.layers.{i}"
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            yield f"{p}.self_attn.{name}", _lin(width, width)
        yield f"{p}.mlp.fc1", _lin(mlp, width)
        yield f"{p}.mlp.fc2", _lin(width, mlp)


CLIP_L, OPENCLIP_H, CLIP_G = (768, 3072, 12), (1024, 4096, 23), (1280, 5120, 32)


# ---- DiTs ------------------------------------------------------------------------------------------------------
FLUX_HIDDEN, FLUX_MLP, FLUX_DOUBLE, FLUX_SINGLE = 3072, 12288, 19, 38


def _flux_native(h: int = FLUX_HIDDEN, mlp: int = FLUX_MLP) -> Modules:
    for i in range(FLUX_DOUBLE):
        for s in ("img", "txt"):
            p = f"double_blocks.{i}.{s}"
            yield f"{p}_attn.qkv", _lin(3 * h, h)
            yield f"{p}_attn.proj", _lin(h, h)
            yield f"{p}_mlp.0", _lin(mlp, h)
            yield f"{p}_mlp.2", _lin(h, mlp)
            yield f"{p}_mod.lin", _lin(6 * h, h)
    for j in range(FLUX_SINGLE):
        yield f"single_blocks.{j}.linear1", _lin(3 * h + mlp, h)
        yield f"single_blocks.{j}.linear2", _lin(h, h + mlp)
        yield f"single_blocks.{j}.modulation.lin", _lin(3 * h, h)


def _flux_diffusers(h: int = FLUX_HIDDEN, mlp: int = FLUX_MLP) -> Modules:
    for i in range(FLUX_DOUBLE):
        p = f"transformer_blocks.{i}"
        for name in ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"):
            yield f"{p}.attn.{name}", _lin(h, h)
        for ff in ("ff", "ff_context"):
            yield f"{p}.{ff}.net.0.proj", _lin(mlp, h)
            yield f"{p}.{ff}.net.2", _lin(h, mlp)
        yield f"{p}.norm1.linear", _lin(6 * h, h)
        yield f"{p}.norm1_context.linear", _lin(6 * h, h)
    for j in range(FLUX_SINGLE):
        p = f"single_transformer_blocks.{j}"
        for name in ("to_q", "to_k", "to_v"):
            yield f"{p}.attn.{name}", _lin(h, h)
        yield f"{p}.proj_mlp", _lin(mlp, h)
        yield f"{p}.proj_out", _lin(h, h + mlp)
        yield f"{p}.norm.linear", _lin(3 * h, h)


def _flux_xlabs(h: int = FLUX_HIDDEN) -> Modules:
    for i in range(FLUX_DOUBLE):
        for n in ("1", "2"):  # 1 = img stream, 2 = txt stream
            yield f"double_blocks.{i}.processor.qkv_lora{n}", _lin(3 * h, h)
            yield f"double_blocks.{i}.processor.proj_lora{n}", _lin(h, h)


SD3_VARIANTS = {"medium": (24, 0), "3.5-medium": (24, 13), "3.5-large": (38, 0)}  # depth, x_block attn2 layers


def _sd3_native(variant: str) -> Modules:
    depth, attn2_layers = SD3_VARIANTS[variant]
    h = 64 * depth
    for i in range(depth):
        for blk in ("x_block", "context_block"):
            p = f"joint_blocks.{i}.{blk}"
            pre_only = blk == "context_block" and i == depth - 1
            dual = blk == "x_block" and i < attn2_layers
            yield f"{p}.attn.qkv", _lin(3 * h, h)
            if not pre_only:
                yield f"{p}.attn.proj", _lin(h, h)
            if dual:
                yield f"{p}.attn2.qkv", _lin(3 * h, h)
                yield f"{p}.attn2.proj", _lin(h, h)
            if not pre_only:
                yield f"{p}.mlp.fc1", _lin(4 * h, h)
                yield f"{p}.mlp.fc2", _lin(h, 4 * h)
            yield f"{p}.adaLN_modulation.1", _lin((2 if pre_only else 9 if dual else 6) * h, h)


WAN_VARIANTS = {"1.3b": (1536, 8960, 30), "5b": (3072, 14336, 30), "14b": (5120, 13824, 40),
                "14b-i2v": (5120, 13824, 40)}


def _wan(variant: str, diffusers: bool) -> Modules:
    dim, ffn, blocks = WAN_VARIANTS[variant]
    i2v = variant.endswith("i2v")
    for i in range(blocks):
        p = f"blocks.{i}"
        if diffusers:
            for attn in ("attn1", "attn2"):
                for name in ("to_q", "to_k", "to_v", "to_out.0"):
                    yield f"{p}.{attn}.{name}", _lin(dim, dim)
            if i2v:
                yield f"{p}.attn2.add_k_proj", _lin(dim, dim)
                yield f"{p}.attn2.add_v_proj", _lin(dim, dim)
            yield f"{p}.ffn.net.0.proj", _lin(ffn, dim)
            yield f"{p}.ffn.net.2", _lin(dim, ffn)
        else:
            for attn in ("self_attn", "cross_attn"):
                for name in ("q", "k", "v", "o"):
                    yield f"{p}.{attn}.{name}", _lin(dim, dim)
            if i2v:
                yield f"{p}.cross_attn.k_img", _lin(dim, dim)
                yield f"{p}.cross_attn.v_img", _lin(dim, dim)
            yield f"{p}.ffn.0", _lin(ffn, dim)
            yield f"{p}.ffn.2", _lin(dim, ffn)


def _hunyuan_video(h: int = 3072, mlp: int = 12288) -> Modules:
    for i in range(20):
        for s in ("img", "txt"):
            p = f"double_blocks.{i}.{s}"
            yield f"{p}_attn_qkv", _lin(3 * h, h)
            yield f"{p}_attn_proj", _lin(h, h)
            yield f"{p}_mlp.fc1", _lin(mlp, h)
            yield f"{p}_mlp.fc2", _lin(h, mlp)
            yield f"{p}_mod.linear", _lin(6 * h, h)
    for j in range(40):
        yield f"single_blocks.{j}.linear1", _lin(3 * h + mlp, h)
        yield f"single_blocks.{j}.linear2", _lin(h, h + mlp)
        yield f"single_blocks.{j}.modulation.linear", _lin(3 * h, h)


# ---- styles ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Style:
    """How one (family, style) pair names its modules and parameters."""

    prefix: str  # prepended to the native path of the diffusion model
    underscore: bool  # kohya-like: native "." → "_"
    params: str  # "kohya" (lora_down/lora_up/alpha), "peft" (lora_A/lora_B, no alpha), "xlabs" (down/up, no alpha)
    text_encoders: tuple[tuple[str, tuple[int, int, int]], ...] = ()  # (prefix, (width, mlp, layers))


_SD_UNETS = {  # channels, attention per level, transformer depth per level, context, linear proj_in/out
    "sd1": ((320, 640, 1280, 1280), (True, True, True, False), (1, 1, 1, 1), 768, False),
    "sd2": ((320, 640, 1280, 1280), (True, True, True, False), (1, 1, 1, 1), 1024, True),
    "sdxl": ((320, 640, 1280), (False, True, True), (1, 2, 10), 2048, True),
}

STYLES: dict[str, dict[str, Style]] = {
    "sd1": {"kohya": Style("lora_unet_", True, "kohya", (("lora_te_", CLIP_L),)),
            "peft": Style("unet.", False, "peft", (("text_encoder.", CLIP_L),))},
    "sd2": {"kohya": Style("lora_unet_", True, "kohya", (("lora_te_", OPENCLIP_H),)),
            "peft": Style("unet.", False, "peft", (("text_encoder.", OPENCLIP_H),))},
    "sdxl": {"kohya": Style("lora_unet_", True, "kohya", (("lora_te1_", CLIP_L), ("lora_te2_", CLIP_G))),
             "diffusers": Style("lora_unet_", True, "kohya", (("lora_te1_", CLIP_L), ("lora_te2_", CLIP_G))),
             "peft": Style("unet.", False, "peft", (("text_encoder.", CLIP_L), ("text_encoder_2.", CLIP_G)))},
    "sd3": {"kohya": Style("lora_unet_", True, "kohya", (("lora_te1_", CLIP_L), ("lora_te2_", CLIP_G)))},
    "flux": {"kohya": Style("lora_unet_", True, "kohya", (("lora_te1_", CLIP_L),)),
             "comfy": Style("diffusion_model.", False, "kohya"),
             "peft": Style("transformer.", False, "peft", (("text_encoder.", CLIP_L),)),
             "xlabs": Style("", False, "xlabs"),
             "onetrainer": Style("lora_transformer_", True, "kohya", (("lora_te1_", CLIP_L),)),
             "lycoris": Style("lycoris_", True, "kohya")},
    "wan": {"musubi": Style("lora_unet_", True, "kohya"),
            "comfy": Style("diffusion_model.", False, "peft"),
            "diffusers": Style("transformer.", False, "peft")},
    "hunyuan_video": {"musubi": Style("lora_unet_", True, "kohya")},
}
FAMILY_ALIASES = {"sd15": "sd1", "sd1.5": "sd1", "hunyuan": "hunyuan_video", "hunyuanvideo": "hunyuan_video"}
STYLE_ALIASES = {("wan", "kohya"): "musubi", ("hunyuan_video", "kohya"): "musubi", ("flux", "simpletuner"): "lycoris",
                 ("flux", "diffusers"): "peft", ("wan", "peft"): "diffusers"}
VARIANTS = {"sd3": ("medium", "3.5-medium", "3.5-large"), "wan": tuple(WAN_VARIANTS)}
DEFAULT_VARIANT = {"sd3": "medium", "wan": "14b"}
VARIANT_ALIASES = {"large": "3.5-large", "3.5-m": "3.5-medium", "sd3.5-medium": "3.5-medium", "sd3.5-large": "3.5-large",
                   "i2v": "14b-i2v", "14b_i2v": "14b-i2v", "1.3B": "1.3b", "5B": "5b", "14B": "14b"}
#: family id used by :mod:`lorawb_core.families` for each generator family
DETECTED_FAMILY = {"sd1": "sd15"}


def resolve(family: str, style: str | None, variant: str | None) -> tuple[str, str, str | None]:
    """Canonical (family, style, variant); raises :class:`UsageError` for unknown combinations."""
    fam = FAMILY_ALIASES.get(family.lower(), family.lower())
    if fam not in STYLES:
        raise UsageError(f"Unknown sample family {family!r}; use one of {', '.join(STYLES)}.")
    sty = (style or ("musubi" if fam in ("wan", "hunyuan_video") else "kohya")).lower()
    sty = STYLE_ALIASES.get((fam, sty), sty)
    if sty not in STYLES[fam]:
        raise UsageError(f"Family {fam!r} has no style {style!r}; use one of {', '.join(STYLES[fam])}.")
    if fam not in VARIANTS:
        if variant is not None:
            raise UsageError(f"Family {fam!r} has no variants; pass variant=None.")
        return fam, sty, None
    var = VARIANT_ALIASES.get(variant, variant) if variant else DEFAULT_VARIANT[fam]
    if var not in VARIANTS[fam]:
        raise UsageError(f"Unknown {fam} variant {variant!r}; use one of {', '.join(VARIANTS[fam])}.")
    return fam, sty, var


def native_modules(family: str, style: str, variant: str | None, conv: bool) -> Modules:
    """The diffusion model's LoRA target modules as native dotted paths (already-resolved arguments)."""
    if family in _SD_UNETS:
        if family == "sdxl" and style == "kohya":
            return _sdxl_ldm(conv)
        ch, attn, depth, ctx, linear = _SD_UNETS[family]
        return _diffusers_unet(ch, attn, depth, ctx, linear, conv)
    if family == "flux":
        if style in ("kohya", "comfy"):
            return _flux_native()
        return _flux_xlabs() if style == "xlabs" else _flux_diffusers()
    if family == "sd3":
        return _sd3_native(variant or "medium")
    if family == "wan":
        return _wan(variant or "14b", diffusers=style == "diffusers")
    return _hunyuan_video()


def text_encoder_modules(family: str, style: str) -> Iterator[tuple[str, str, ModuleShape]]:
    """(prefix, native path, shape) for each text-encoder module the style can name."""
    st = STYLES[family][style]
    for prefix, (width, mlp, layers) in st.text_encoders:
        for path, shape in _clip(width, mlp, layers):
            yield prefix, path, shape


def render(prefix: str, path: str, underscore: bool) -> str:
    return prefix + (path.replace(".", "_") if underscore else path)
