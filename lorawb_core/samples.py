"""Small but real-format sample LoRA files: real key names and real base-model shapes, small rank.

Used by ``lorawb demo`` (a sample library to inspect), by the tests and by the benchmarks. Only numpy and
``safetensors.numpy`` are needed (importing torch is slow). Module tables live in :mod:`lorawb_core.sample_specs`.

>>> sd = make_state_dict("sdxl", rank=4)
>>> sd["lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight"].shape
(4, 2048)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from .errors import UsageError
from .sample_specs import (
    DETECTED_FAMILY,
    STYLES,
    VARIANTS,
    ModuleShape,
    native_modules,
    render,
    resolve,
    text_encoder_modules,
)

__all__ = ["ALGORITHMS", "FAMILIES", "STYLES", "VARIANTS", "ModuleShape", "SampleSpec", "build_sample_library",
           "lycoris_factorization", "make_state_dict", "module_shapes", "planned_modules", "write_lora"]

FAMILIES = tuple(STYLES)
ALGORITHMS = ("lora", "locon", "locon_tucker", "loha", "lokr", "lokr_full", "full")
_PARAMS = {  # param naming per style kind: down, up, alpha (None = not written), dora
    "kohya": (".lora_down.weight", ".lora_up.weight", ".alpha", ".dora_scale"),
    "peft": (".lora_A.weight", ".lora_B.weight", None, ".lora_magnitude_vector.weight"),
    "xlabs": (".down.weight", ".up.weight", None, None),
}
_ALGOS_FOR = {"kohya": set(ALGORITHMS), "peft": {"lora", "full"}, "xlabs": {"lora"}}
_DTYPES = {"float16": np.float16, "fp16": np.float16, "float32": np.float32, "fp32": np.float32}
_STD_DOWN, _STD_UP = 0.02, 0.01


def module_shapes(family: str, style: str = "kohya", *, conv: bool = False, te: bool = True,
                  variant: str | None = None) -> dict[str, ModuleShape]:
    """Every module a LoRA of this family/style can carry, keyed as written in the file (no param suffix).

    ``conv=True`` adds the k×k convolutions of SD-style UNets (LoCon targets: resnets, samplers); ``te=True`` adds
    the text encoders the style can name (ignored where the style has none: ComfyUI/XLabs Flux, WAN, HunyuanVideo).
    ``variant`` picks SD3 (``medium``, ``3.5-medium``, ``3.5-large``/``large``) or WAN (``1.3b``, ``5b``, ``14b``,
    ``14b-i2v``) sizes.
    """
    fam, sty, var = resolve(family, style, variant)
    st = STYLES[fam][sty]
    out = {render(st.prefix, path, st.underscore): shape for path, shape in native_modules(fam, sty, var, conv)}
    if te:
        for prefix, path, shape in text_encoder_modules(fam, sty):
            out[render(prefix, path, st.underscore)] = shape
    return out


def _select(shapes: dict[str, ModuleShape], modules: Iterable[str] | None) -> dict[str, ModuleShape]:
    if modules is None:
        return shapes
    chosen: set[str] = set()
    for pat in modules:
        if any(ch in pat for ch in "*?["):
            hit = {k for k in shapes if fnmatchcase(k, pat)}
        else:
            hit = {pat} if pat in shapes else set()
        if not hit:
            raise UsageError(f"No module matches {pat!r}; list the valid keys with module_shapes().")
        chosen |= hit
    return {k: v for k, v in shapes.items() if k in chosen}


def planned_modules(family: str, style: str = "kohya", *, algorithm: str = "lora", conv: bool = False,
                    te: bool = True, variant: str | None = None,
                    modules: Iterable[str] | None = None) -> dict[str, ModuleShape]:
    """The modules :func:`make_state_dict` writes for these arguments (``locon*`` implies ``conv=True``)."""
    conv = conv or algorithm in ("locon", "locon_tucker")
    return _select(module_shapes(family, style, conv=conv, te=te, variant=variant), modules)


def lycoris_factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """(m, n) with m ≤ n and m·n = dimension, m closest to ``factor`` (LyCORIS ``functional.factorization``)."""
    if factor > 0 and dimension % factor == 0:
        m, n = factor, dimension // factor
        return (m, n) if m <= n else (n, m)
    if factor < 0:
        factor = dimension
    m, n = 1, dimension
    while m < n:
        new_m = m + 1
        while dimension % new_m:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > m + n or new_m > factor:
            break
        m, n = new_m, new_n
    return (m, n) if m <= n else (n, m)


class _Gen:
    def __init__(self, seed: int, dtype: type[np.floating]) -> None:
        self.rng = np.random.default_rng(seed)
        self.dtype = dtype

    def normal(self, shape: tuple[int, ...], std: float) -> np.ndarray:
        return (self.rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(self.dtype)

    def scalar(self, value: float) -> np.ndarray:
        return np.array(value, dtype=self.dtype)

    def positive(self, shape: tuple[int, ...]) -> np.ndarray:  # DoRA magnitudes (row norms of W): positive, ~1
        return (1.0 + 0.2 * np.abs(self.rng.standard_normal(shape, dtype=np.float32))).astype(self.dtype)


def _module_tensors(g: _Gen, key: str, s: ModuleShape, algorithm: str, rank: int, alpha: float | None,
                    kind: str, dora: bool, factor: int) -> dict[str, np.ndarray]:
    down_s, up_s, alpha_s, dora_s = _PARAMS[kind]
    out, inp, (kh, kw) = s.out_features, s.in_features, s.kernel
    fan_in = inp * kh * kw
    r = max(1, min(rank, out, fan_in))
    a = float(r if alpha is None else alpha)
    t: dict[str, np.ndarray] = {}
    if algorithm in ("lora", "locon") or (algorithm == "locon_tucker" and not s.spatial):
        t[key + down_s] = g.normal((r, inp, kh, kw) if s.is_conv else (r, inp), _STD_DOWN)
        t[key + up_s] = g.normal((out, r, 1, 1) if s.is_conv else (out, r), _STD_UP)
    elif algorithm == "locon_tucker":
        t[key + ".lora_down.weight"] = g.normal((r, inp, 1, 1), _STD_DOWN)
        t[key + ".lora_mid.weight"] = g.normal((r, r, kh, kw), _STD_DOWN)
        t[key + ".lora_up.weight"] = g.normal((out, r, 1, 1), _STD_UP)
    elif algorithm == "loha":
        for i in ("1", "2"):
            t[f"{key}.hada_w{i}_a"] = g.normal((out, r), _STD_UP)
            t[f"{key}.hada_w{i}_b"] = g.normal((r, fan_in), _STD_DOWN)
    elif algorithm in ("lokr", "lokr_full"):
        c, d = lycoris_factorization(inp, factor)  # w1 gets the smaller factors
        a1, b = lycoris_factorization(out, factor)
        t[key + ".lokr_w1"] = g.normal((a1, c), _STD_DOWN)
        if algorithm == "lokr_full" or r >= max(b, d) / 2:
            t[key + ".lokr_w2"] = g.normal((b, d, kh, kw) if s.is_conv else (b, d), _STD_UP)
            if algorithm == "lokr_full":
                a = float(r)  # LyCORIS forces alpha = dim when both factors are full (scale 1)
        else:
            t[key + ".lokr_w2_a"] = g.normal((b, r), _STD_UP)
            t[key + ".lokr_w2_b"] = g.normal((r, d * kh * kw), _STD_DOWN)
    elif algorithm == "full":
        t[key + ".diff"] = g.normal(s.weight_shape, 0.001)
        t[key + ".diff_b"] = g.normal((out,), 0.001)
        return t
    if alpha_s is not None:
        t[key + alpha_s] = g.scalar(a)
    if dora:
        if dora_s is None:
            raise UsageError("XLabs-style files cannot carry DoRA magnitudes; use another style.")
        shape = (out,) if kind == "peft" else ((out, 1, 1, 1) if s.is_conv else (out, 1))
        t[key + dora_s] = g.positive(shape)
    return t


def make_state_dict(family: str, style: str = "kohya", *, algorithm: str = "lora", rank: int = 4,
                    alpha: float | None = None, conv: bool = False, te: bool = True, dtype: str = "float16",
                    seed: int = 0, modules: Iterable[str] | None = None, dora: bool = False,
                    variant: str | None = None, conv_rank: int | None = None, conv_alpha: float | None = None,
                    factor: int = -1) -> dict[str, np.ndarray]:
    """Tensors of one sample LoRA (file keys → numpy arrays).

    ``alpha=None`` means alpha = rank (scale 1). ``modules`` restricts the file to some module keys (exact keys or
    ``fnmatch`` patterns such as ``"*_attn2_*"``). ``conv_rank``/``conv_alpha`` set rank/alpha of k×k convolutions
    (kohya ``conv_dim``/``conv_alpha``). ``factor`` is the LyCORIS LoKr factor (-1 = as square as possible).
    PEFT-style files (``lora_A``/``lora_B``) carry no alpha; their DoRA magnitude is ``lora_magnitude_vector``.
    """
    if algorithm not in ALGORITHMS:
        raise UsageError(f"Unknown algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}.")
    if dtype not in _DTYPES:
        raise UsageError(f"dtype must be float16 or float32, not {dtype!r}.")
    if rank < 1:
        raise UsageError(f"rank must be at least 1, not {rank}.")
    fam, sty, var = resolve(family, style, variant)
    kind = STYLES[fam][sty].params
    if algorithm not in _ALGOS_FOR[kind]:
        raise UsageError(f"Style {sty!r} of {fam} writes {kind}-named tensors and cannot hold {algorithm!r}; "
                         f"use one of {', '.join(sorted(_ALGOS_FOR[kind]))}.")
    if dora and algorithm == "full":
        raise UsageError("DoRA needs a low-rank algorithm, not 'full'.")
    plan = planned_modules(fam, sty, algorithm=algorithm, conv=conv, te=te, variant=var, modules=modules)
    g = _Gen(seed, _DTYPES[dtype])
    tensors: dict[str, np.ndarray] = {}
    for key, shape in plan.items():
        r, a = (conv_rank or rank, conv_alpha if conv_alpha is not None else alpha) if shape.spatial else (rank, alpha)
        tensors.update(_module_tensors(g, key, shape, algorithm, r, a, kind, dora, factor))
    return tensors


def _sorted_metadata(blob: bytes) -> bytes:
    """safetensors writes ``__metadata__`` in hash-map order; sort it so equal inputs give byte-equal files."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    if not header.get("__metadata__"):
        return blob
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    new = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(new) > n:  # cannot happen (same content, same escaping); keep the library's bytes if it ever does
        return blob
    return blob[:8] + new.ljust(n, b" ") + blob[8 + n:]


def _atomic_save(tensors: dict[str, np.ndarray], path: Path, metadata: Mapping[str, str] | None) -> None:
    if metadata is not None:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise UsageError(f"safetensors metadata values must be strings; fix {', '.join(map(str, bad))}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = _sorted_metadata(save(tensors, metadata=dict(metadata) if metadata else None))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a library file should be readable like any other
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_lora(path: str | os.PathLike[str], family: str, style: str = "kohya", *,
               metadata: Mapping[str, str] | None = None, **make_kwargs) -> Path:
    """Write :func:`make_state_dict` output to ``path`` atomically (temp file in the same folder + ``os.replace``)."""
    path = Path(path)
    _atomic_save(make_state_dict(family, style, **make_kwargs), path, metadata)
    return path


# ---- sample library -------------------------------------------------------------------------------------------
@dataclass
class SampleSpec:
    """One file written by :func:`build_sample_library` and what it is expected to contain."""

    path: Path
    family: str
    variant: str | None
    style: str
    algorithm: str
    rank: int
    modules: frozenset[str]
    alpha: float | None = None
    dora: bool = False
    conv: bool = False
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def detected_family(self) -> str:
        """The family id :mod:`lorawb_core.families` reports for this file (``sd1`` → ``sd15``)."""
        return DETECTED_FAMILY.get(self.family, self.family)


def _kohya_meta(base: str, module: str, dim: int, alpha: float, output: str, model: str, tags: dict[str, int],
                images: int, steps: int, lr: str = "0.0001", **extra: str) -> dict[str, str]:
    meta = {"ss_base_model_version": base, "ss_network_module": module, "ss_network_dim": str(dim),
            "ss_network_alpha": f"{alpha:g}", "ss_output_name": output, "ss_sd_model_name": model,
            "ss_tag_frequency": json.dumps({f"10_{output.split('_')[0]}": tags}), "ss_num_train_images": str(images),
            "ss_steps": str(steps), "ss_learning_rate": lr}
    meta.update(extra)
    return meta


_ATTN = ("*attn1_to_[qkv]", "*attn1_to_out_0", "*attn2_to_[qkv]", "*attn2_to_out_0")
_SDXL_640 = ("lora_unet_input_blocks_[45]_*", "lora_unet_output_blocks_[345]_*")


def _library() -> list[tuple[str, str, str, dict]]:
    """(relative path, family, style, make/write kwargs) of the demo library."""
    char_tags = {"mychar": 20, "1girl": 18, "smile": 5}
    return [
        ("characters/mychar_sd15_v2.safetensors", "sd1", "kohya", dict(rank=2, alpha=1, metadata=_kohya_meta(
            "sd_v1", "networks.lora", 2, 1, "mychar_sd15_v2", "v1-5-pruned-emaonly.safetensors", char_tags, 20, 2000,
            ss_v2="False"))),
        ("characters/pony/ponychar_xl-000010.safetensors", "sdxl", "kohya", dict(
            rank=2, alpha=1, te=False, modules=("*_attn1_to_q", "*_attn2_to_[kv]"), metadata=_kohya_meta(
                "sdxl_base_v1-0", "networks.lora", 2, 1, "ponychar_xl", "ponyDiffusionV6XL.safetensors",
                {"ponychar": 40, "score_9": 40, "1girl": 38, "looking at viewer": 12}, 40, 3200))),
        ("characters/illustrious/ilxl_heroine_dora.safetensors", "sdxl", "kohya", dict(
            rank=4, dora=True, te=False, modules=_SDXL_640, metadata={
                "ss_network_module": "lycoris.kohya", "ss_sd_model_name": "illustriousXL_v01.safetensors",
                "ss_network_args": json.dumps({"algo": "lora", "dora_wd": "True"})})),
        ("characters/Anime Girl (SD2) v1.safetensors", "sd2", "kohya", dict(
            rank=2, modules=("lora_unet_*", "lora_te_*_layers_1[2-9]_*", "lora_te_*_layers_2?_*"), metadata={
            "ss_base_model_version": "sd_v2", "ss_v2": "True", "ss_network_module": "networks.lora"})),
        ("styles/watercolor_sd15_locon.safetensors", "sd1", "kohya", dict(
            algorithm="locon", rank=2, conv_rank=2, conv_alpha=1, te=False, metadata={
                "ss_network_module": "networks.lora", "ss_network_args": json.dumps({"conv_dim": "2", "conv_alpha": "1"})})),
        ("styles/pixel_art_tucker.safetensors", "sd1", "kohya", dict(
            algorithm="locon_tucker", rank=2, te=False, modules=("lora_unet_down_blocks_*", "lora_unet_mid_block_*"))),
        ("styles/ink_sketch_loha.safetensors", "sd1", "kohya", dict(
            algorithm="loha", rank=2, alpha=1, te=False, modules=_ATTN)),
        ("styles/film_grain_xl_lokr.safetensors", "sdxl", "kohya", dict(
            algorithm="lokr", rank=4, factor=8, te=False, conv=True, metadata={
                "ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps({"algo": "lokr", "factor": "8"})})),
        ("styles/oil_painting_xl_diffusers_names.safetensors", "sdxl", "diffusers", dict(rank=2, te=False, modules=("*_attn2_to_[kv]",))),
        ("concepts/detail_tweaker_full.safetensors", "sd1", "kohya", dict(
            algorithm="full", te=False, modules=("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_*",))),
        ("concepts/pose_lokr_full.safetensors", "sdxl", "kohya", dict(
            algorithm="lokr_full", rank=8, factor=16, te=False, modules=("lora_unet_middle_block_1_*",))),
        ("concepts/xss_fixture.safetensors", "sd1", "kohya", dict(rank=2, te=False, modules=_ATTN[:1], metadata={
            "modelspec.architecture": "stable-diffusion-v1/lora", "modelspec.title": "<img src=x onerror=alert(1)>",
            "modelspec.trigger_phrase": "<script>alert('trigger')</script>"})),
        ("concepts/sd3/sd3_medium_concept.safetensors", "sd3", "kohya", dict(
            rank=2, te=False, modules=("*x_block_attn_qkv", "*_context_block_adaLN_modulation_1"),
            metadata={"ss_network_module": "networks.lora_sd3"})),
        ("concepts/sd3/sd35_medium_dual_attn.safetensors", "sd3", "kohya", dict(
            variant="3.5-medium", rank=2, te=False, modules=("*x_block_attn*",))),
        ("concepts/sd3/sd35_large_style.safetensors", "sd3", "kohya", dict(
            variant="3.5-large", rank=2, te=False, modules=("*x_block_attn_*",))),
        ("flux/flux_portrait_kohya.safetensors", "flux", "kohya", dict(
            rank=2, alpha=2, modules=("*_img_attn_*", "lora_unet_single_blocks_*_modulation_lin",
                                      "lora_te1_*_layers_[0-5]_*"),
            metadata={"modelspec.architecture": "flux-1-dev/lora", "modelspec.title": "Portrait Flux",
                      "modelspec.trigger_phrase": "prtrt style", "ss_base_model_version": "flux1",
                      "ss_network_module": "networks.lora_flux", "ss_network_dim": "2", "ss_network_alpha": "2"})),
        ("flux/comfy/flux_realism_comfy.safetensors", "flux", "comfy", dict(rank=2, alpha=1, modules=("*_attn.qkv",))),
        ("flux/diffusers/flux_ghibli_peft.safetensors", "flux", "peft", dict(
            rank=2, te=False, modules=("transformer.transformer_blocks.*.attn.to_[qkv]",
                                       "transformer.single_transformer_blocks.*.attn.to_q"),
            metadata={"lora_adapter_metadata": json.dumps({"r": 2, "lora_alpha": 4,
                                                           "target_modules": ["to_q", "to_k", "to_v"]})})),
        ("flux/xlabs/xlabs_anime_lora.safetensors", "flux", "xlabs", dict(rank=2)),
        ("flux/onetrainer/ot_char_flux.safetensors", "flux", "onetrainer", dict(
            rank=2, modules=("lora_transformer_transformer_blocks_*_attn_to_[qkv]", "lora_te1_*_layers_1[01]_*"))),
        ("flux/simpletuner/st_lokr_flux.safetensors", "flux", "lycoris", dict(
            algorithm="lokr", rank=4, factor=16, modules=("lycoris_transformer_blocks_*",))),
        ("video/wan/wan21_1.3b_motion_musubi.safetensors", "wan", "musubi", dict(
            variant="1.3b", rank=2, alpha=1, modules=("*_self_attn_*", "*_cross_attn_*"),
            metadata={"ss_network_module": "networks.lora_wan"})),
        ("video/wan/wan21_i2v_camera_comfy.safetensors", "wan", "comfy", dict(
            variant="14b-i2v", rank=2, modules=("*.cross_attn.[kv]_img",))),
        ("video/wan/wan22_5b_diffusers.safetensors", "wan", "diffusers", dict(variant="5b", rank=2, modules=("*.attn1.*",))),
        ("video/hunyuan/hv_style_musubi.safetensors", "hunyuan_video", "musubi", dict(
            rank=2, modules=("*_img_attn_qkv", "lora_unet_single_blocks_*_modulation_linear"))),
    ]


def build_sample_library(root: str | os.PathLike[str], *, seed: int = 0) -> list[SampleSpec]:
    """Write a small, varied library of real-format LoRAs under ``root`` (25 files, ~58 MB, ~1 s).

    Covers every family, every style and every algorithm; file names and folders look like a user's library, a few
    files carry kohya ``ss_*`` / ``modelspec.*`` / ``lora_adapter_metadata`` metadata and ``concepts/xss_fixture``
    has HTML in ``modelspec.title``/``trigger_phrase`` (an XSS fixture for the UI). Deterministic for a given seed.
    """
    root = Path(root)
    specs: list[SampleSpec] = []
    for i, (rel, family, style, kw) in enumerate(_library()):
        kw = dict(kw)
        meta = kw.pop("metadata", None)
        plan = planned_modules(family, style, algorithm=kw.get("algorithm", "lora"), conv=kw.get("conv", False),
                               te=kw.get("te", True), variant=kw.get("variant"), modules=kw.get("modules"))
        path = write_lora(root / rel, family, style, metadata=meta, seed=seed + i, **kw)
        fam, sty, var = resolve(family, style, kw.get("variant"))
        algo = kw.get("algorithm", "lora")
        specs.append(SampleSpec(path=path, family=fam, variant=var, style=sty, algorithm=algo,
                                rank=kw.get("rank", 4), modules=frozenset(plan), alpha=kw.get("alpha"),
                                dora=kw.get("dora", False), conv=kw.get("conv", False) or algo.startswith("locon"),
                                metadata=dict(meta or {})))
    return specs
