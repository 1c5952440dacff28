"""Per-module norms from the low-rank math equal the norm of the densely rebuilt ΔW (scale included)."""

from __future__ import annotations

import math

import pytest
import torch

from lorawb_core import inspect_file

torch.manual_seed(1234)
REL = 1e-5


def rnd(*shape, std=0.1):
    return torch.randn(*shape, dtype=torch.float32) * std


def module_norm(path, key):
    report = inspect_file(path)
    (m,) = [m for m in report.modules if m.key == key]
    return m, report


def check(norm, dense):
    ref = float(dense.double().norm())
    assert norm == pytest.approx(ref, rel=REL), (norm, ref)


KEY = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
CONV = "lora_unet_down_blocks_1_resnets_0_conv1"


@pytest.mark.parametrize("alpha", [None, 1.0, 8.0])
def test_lora_linear(write, alpha):
    up, down = rnd(640, 8), rnd(8, 640)
    t = {f"{KEY}.lora_up.weight": up, f"{KEY}.lora_down.weight": down}
    if alpha is not None:
        t[f"{KEY}.alpha"] = torch.tensor(alpha)
    m, _ = module_norm(write("a.safetensors", t), KEY)
    scale = 1.0 if alpha is None else alpha / 8
    assert m.scale == scale
    check(m.norm, scale * (up @ down))
    sv = torch.linalg.svdvals(scale * up.double() @ down.double())
    # effective rank from the r×r Grams equals the one from a dense SVD
    p = sv[:8] / sv[:8].sum()
    assert m.effective_rank == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-6)


def test_lora_bf16_alpha_and_fp16(write):
    up, down = rnd(320, 4).bfloat16(), rnd(4, 768).half()
    t = {f"{KEY}.lora_up.weight": up, f"{KEY}.lora_down.weight": down, f"{KEY}.alpha": torch.tensor(3.0).bfloat16()}
    m, _ = module_norm(write("b.safetensors", t), KEY)
    assert m.alpha == 3.0
    check(m.norm, 0.75 * (up.float() @ down.float()))


def test_locon_conv3x3(write):
    up, down = rnd(640, 4, 1, 1), rnd(4, 320, 3, 3)
    t = {f"{CONV}.lora_up.weight": up, f"{CONV}.lora_down.weight": down, f"{CONV}.alpha": torch.tensor(2.0)}
    m, _ = module_norm(write("c.safetensors", t), CONV)
    assert m.algorithm == "locon" and m.shape == [640, 320, 3, 3]
    check(m.norm, 0.5 * (up.flatten(1) @ down.flatten(1)))


def test_locon_tucker(write):
    up, mid, down = rnd(640, 4, 1, 1), rnd(4, 4, 3, 3), rnd(4, 320, 1, 1)
    t = {f"{CONV}.lora_up.weight": up, f"{CONV}.lora_mid.weight": mid, f"{CONV}.lora_down.weight": down,
         f"{CONV}.alpha": torch.tensor(4.0)}
    m, _ = module_norm(write("d.safetensors", t), CONV)
    dense = torch.einsum("or,rdij,dc->ocij", up.flatten(1), mid, down.flatten(1))
    check(m.norm, dense)


def test_loha(write):
    w1a, w1b, w2a, w2b = rnd(640, 4), rnd(4, 640), rnd(640, 4), rnd(4, 640)
    t = {f"{KEY}.hada_w1_a": w1a, f"{KEY}.hada_w1_b": w1b, f"{KEY}.hada_w2_a": w2a, f"{KEY}.hada_w2_b": w2b,
         f"{KEY}.alpha": torch.tensor(2.0)}
    m, _ = module_norm(write("e.safetensors", t), KEY)
    assert m.algorithm == "loha"
    check(m.norm, 0.5 * (w1a @ w1b) * (w2a @ w2b))


def test_loha_tucker_conv(write):
    w1a, w1b, t1 = rnd(4, 640), rnd(4, 320), rnd(4, 4, 3, 3)
    w2a, w2b, t2 = rnd(4, 640), rnd(4, 320), rnd(4, 4, 3, 3)
    t = {f"{CONV}.hada_w1_a": w1a, f"{CONV}.hada_w1_b": w1b, f"{CONV}.hada_t1": t1, f"{CONV}.hada_w2_a": w2a,
         f"{CONV}.hada_w2_b": w2b, f"{CONV}.hada_t2": t2, f"{CONV}.alpha": torch.tensor(4.0)}
    m, _ = module_norm(write("f.safetensors", t), CONV)
    r1 = torch.einsum("ijkl,jr,ip->prkl", t1, w1b, w1a)
    r2 = torch.einsum("ijkl,jr,ip->prkl", t2, w2b, w2a)
    assert m.shape == [640, 320, 3, 3]
    check(m.norm, r1 * r2)


@pytest.mark.parametrize("variant", ["full_full", "full_lowrank", "lowrank_lowrank", "tucker"])
def test_lokr(write, variant):
    key = CONV if variant == "tucker" else KEY
    t: dict = {f"{key}.alpha": torch.tensor(2.0)}
    if variant == "lowrank_lowrank":
        a, b = rnd(16, 2), rnd(2, 20)
        t[f"{key}.lokr_w1_a"], t[f"{key}.lokr_w1_b"] = a, b
        w1 = a @ b
    else:
        w1 = rnd(16, 20 if variant != "tucker" else 16)
        t[f"{key}.lokr_w1"] = w1
    if variant == "full_full":
        w2 = rnd(40, 32)
        t[f"{key}.lokr_w2"] = w2
        scale = 1.0
    elif variant == "tucker":
        t2, w2a, w2b = rnd(4, 4, 3, 3), rnd(4, 40), rnd(4, 20)
        t[f"{key}.lokr_t2"], t[f"{key}.lokr_w2_a"], t[f"{key}.lokr_w2_b"] = t2, w2a, w2b
        w2 = torch.einsum("ijkl,ip,jr->prkl", t2, w2a, w2b).contiguous()
        scale = 0.5
    else:
        a, b = rnd(40, 4), rnd(4, 32)
        t[f"{key}.lokr_w2_a"], t[f"{key}.lokr_w2_b"] = a, b
        w2 = a @ b
        scale = 0.5
    m, _ = module_norm(write("g.safetensors", t), key)
    assert m.algorithm == "lokr" and m.scale == scale
    w1d = w1.reshape(*w1.shape, 1, 1) if w2.dim() == 4 else w1
    check(m.norm, scale * torch.kron(w1d, w2))


def test_full_diff_with_bias(write):
    d, b = rnd(320, 320), rnd(320)
    m, _ = module_norm(write("h.safetensors", {f"{KEY}.diff": d, f"{KEY}.diff_b": b}), KEY)
    assert m.algorithm == "full"
    assert m.norm == pytest.approx(math.sqrt(float(d.double().pow(2).sum() + b.double().pow(2).sum())), rel=REL)


def test_peft_names_and_adapter_metadata_alpha(write):
    import json

    key = "transformer.transformer_blocks.0.attn.to_out.0"
    up, down = rnd(3072, 4), rnd(4, 3072)
    t = {f"{key}.lora_B.weight": up, f"{key}.lora_A.weight": down}
    meta = {"lora_adapter_metadata": json.dumps({"r": 4, "lora_alpha": 8})}
    m, report = module_norm(write("p.safetensors", t, meta), key)
    assert m.alpha == 8 and m.scale == 2.0
    assert m.target == "diffusion_model.double_blocks.0.img_attn.proj" and m.block == "D00"
    assert report.family.family == "flux"
    check(m.norm, 2.0 * (up @ down))


def test_dora_is_flagged_needs_base(write):
    up, down = rnd(640, 4), rnd(4, 640)
    t = {f"{KEY}.lora_up.weight": up, f"{KEY}.lora_down.weight": down, f"{KEY}.alpha": torch.tensor(4.0),
         f"{KEY}.dora_scale": rnd(640, 1)}
    m, report = module_norm(write("i.safetensors", t), KEY)
    assert m.algorithm == "dora" and m.exact is False and "DoRA" in m.figure
    assert report.needs_base and report.algorithms == {"dora": 1}
    check(m.norm, up @ down)  # the adapter-only figure, labelled as such


def test_block_aggregation_by_hand(write):
    """Two modules in IN04, one in OUT03: block norm = root of summed squares, shares sum to 1."""
    def pair(key, out, inn, value):
        return {f"{key}.lora_up.weight": torch.full((out, 1), value), f"{key}.lora_down.weight": torch.ones(1, inn)}

    k1 = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    k2 = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    k3 = "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn1_to_v"
    t = {**pair(k1, 4, 4, 1.0), **pair(k2, 4, 768, 0.5), **pair(k3, 4, 4, 2.0)}
    report = inspect_file(write("j.safetensors", t))
    blocks = {b.id: b for b in report.blocks}
    e1, e2, e3 = 16 * 1.0, 4 * 768 * 0.25, 16 * 4.0
    assert blocks["IN04"].norm == pytest.approx(math.sqrt(e1 + e2))
    assert blocks["IN04"].module_count == 2
    assert blocks["OUT03"].norm == pytest.approx(math.sqrt(e3))
    assert blocks["IN04"].share == pytest.approx((e1 + e2) / (e1 + e2 + e3))
    assert blocks["IN04"].max_module == k2
    assert sum(b.share for b in report.blocks) == pytest.approx(1.0)
    assert blocks["IN05"].norm == 0 and blocks["IN05"].module_count == 0  # untouched block: 0, not shifted
    assert report.total_norm == pytest.approx(math.sqrt(e1 + e2 + e3))
