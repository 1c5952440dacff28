"""Tensor indexes for bench_index.py: the old repeated set (16 structures) and a realistic mix of many distinct ones.

A real library holds files from many trainers and settings: families and naming styles, ranks, algorithms, which
modules were trained, dtypes, alpha written or not. ``varied_layouts`` draws that mix from the real module tables
(``lorawb_core.samples.module_shapes``): family/style (SD1.5 kohya/PEFT, SDXL kohya/PEFT, Flux kohya/PEFT/XLabs, SD3,
WAN musubi 1.3B/14B, HunyuanVideo musubi), with or without text encoders and 3×3 convolutions, a module subset
(everything, attention only, a random 50-100 %, or only some blocks), rank 2-128, algorithm (LoRA, LoCon, LoHa,
DoRA where the naming can carry it), dtype (F16, BF16, F32) and alpha tensors present or not. Metadata sizes vary per
file (``kohya_metadata``).
"""

from __future__ import annotations

import json
import random
from functools import cache

from lorawb_core.samples import module_shapes

Tensors = tuple[tuple[str, tuple[int, ...]], ...]  # (key, shape) sorted; the dtype is per index
DTYPE_BYTES = {"F16": 2, "BF16": 2, "F32": 4}
# (family, style, variant, weight): how often each kind shows up in the mix
KINDS = [("sd15", "kohya", None, 6), ("sd15", "peft", None, 1), ("sdxl", "kohya", None, 6), ("sdxl", "peft", None, 1),
         ("flux", "kohya", None, 4), ("flux", "peft", None, 2), ("flux", "xlabs", None, 1), ("sd3", "kohya", None, 1),
         ("wan", "musubi", "1.3b", 1), ("wan", "musubi", "14b", 1), ("hunyuan_video", "musubi", None, 1)]
PARAMS = {"kohya": (".lora_down.weight", ".lora_up.weight", ".alpha"), "musubi": (".lora_down.weight",
          ".lora_up.weight", ".alpha"), "peft": (".lora_A.weight", ".lora_B.weight", None),
          "xlabs": (".down.weight", ".up.weight", None)}
RANKS = (2, 4, 8, 8, 16, 16, 16, 32, 32, 64, 128)
ATTENTION = ("attn", "to_q", "to_k", "to_v", "to_out", "qkv", "q_proj", "k_proj", "v_proj", "out_proj", "self_attn",
             "cross_attn")


@cache
def _shapes(family: str, style: str, variant: str | None, te: bool, conv: bool):
    return sorted(module_shapes(family, style, te=te, conv=conv, variant=variant).items())


def _module(key: str, s, algo: str, rank: int, params: tuple, alpha: bool) -> list[tuple[str, tuple[int, ...]]]:
    down, up, alpha_key = params
    r = max(1, min(rank, s.out_features, s.in_features))
    kh, kw = s.kernel
    if algo == "loha":
        out = [(f"{key}.hada_w{i}_{ab}", (s.out_features, r) if ab == "a" else (r, s.in_features * kh * kw))
               for i in (1, 2) for ab in ("a", "b")]
    elif s.is_conv:
        out = [(key + down, (r, s.in_features, kh, kw)), (key + up, (s.out_features, r, 1, 1))]
    else:
        out = [(key + down, (r, s.in_features)), (key + up, (s.out_features, r))]
    if algo == "dora":
        out.append((f"{key}.dora_scale", (s.out_features, 1)))
    if alpha and alpha_key:
        out.append((key + alpha_key, ()))
    return out


def _subset(rng: random.Random, keys: list[str]) -> list[str]:
    how = rng.choice(["all", "all", "attention", "random", "blocks"])
    if how == "attention":
        chosen = [k for k in keys if any(a in k for a in ATTENTION)]
    elif how == "random":
        chosen = [k for k in keys if rng.random() < rng.uniform(0.5, 1.0)]
    elif how == "blocks":  # only some numbered blocks trained (e.g. Flux/WAN "--lora_layers" lists)
        drop = {str(d) for d in rng.sample(range(40), rng.randint(4, 30))}
        chosen = [k for k in keys if not (set(k.replace(".", "_").split("_")) & drop)]
    else:
        chosen = keys
    return chosen or keys


def random_layout(rng: random.Random) -> tuple[str, str, str, int, Tensors]:
    """(family, base-model tag, dtype, rank, tensors) of one random realistic LoRA structure."""
    family, style, variant, _ = rng.choices(KINDS, weights=[k[3] for k in KINDS])[0]
    kind = "peft" if style == "peft" else style
    algo = rng.choice(["lora"] * 6 + (["locon", "loha", "dora"] if kind in ("kohya", "musubi") else []))
    conv = algo in ("locon", "loha") and family in ("sd15", "sdxl") and rng.random() < 0.8
    te = family in ("sd15", "sdxl") and rng.random() < 0.6 or family == "flux" and style == "kohya" and rng.random() < 0.2
    shapes = dict(_shapes(family, style, variant, te, conv))
    rank = rng.choice(RANKS)
    alpha = rng.random() < 0.9
    tensors: list[tuple[str, tuple[int, ...]]] = []
    for key in _subset(rng, list(shapes)):
        tensors += _module(key, shapes[key], algo, rank, PARAMS[kind], alpha)
    dtype = rng.choice(["F16"] * 5 + ["BF16"] * 3 + ["F32"])
    base = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0", "flux": "flux1", "sd3": "sd3", "wan": "wan",
            "hunyuan_video": "hunyuan_video"}[family]
    return family, base, dtype, rank, tuple(sorted(tensors))


def varied_layouts(count: int, seed: int = 0) -> list[tuple[str, str, str, int, Tensors]]:
    """``count`` distinct (tensor set, dtype) structures."""
    rng = random.Random(seed)
    seen: set[tuple[str, Tensors]] = set()
    out = []
    while len(out) < count:
        layout = random_layout(rng)
        if (layout[2], layout[4]) not in seen:
            seen.add((layout[2], layout[4]))
            out.append(layout)
    return out


def kohya_metadata(rng: random.Random, name: str, base: str, rank: int, words: list[str], i: int) -> dict[str, str]:
    """kohya-style metadata with a tag frequency of 3 to 3,000 tags (about 0.1 to 100 KB)."""
    trigger = rng.choice(words) + str(i % 97)
    tags = {trigger: 30, "1girl": 20}
    for j in range(int(rng.lognormvariate(3.0, 1.5)) % 3000):
        tags[f"{rng.choice(words)}_{j}"] = rng.randint(1, 30)
    return {"ss_output_name": name, "ss_base_model_version": base, "ss_network_module": "networks.lora",
            "ss_network_dim": str(rank), "ss_network_alpha": str(max(1, rank // 2)),
            "ss_steps": str(rng.randint(500, 9000)), "ss_tag_frequency": json.dumps({f"10_{trigger}": tags}),
            "ss_num_train_images": "30", "ss_learning_rate": "0.0001"}
