"""Sample-LoRA generator: real key names, real shapes, every algorithm's tensor layout, atomic writes, the library."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from lorawb_core.errors import UsageError
from lorawb_core.samples import (
    ALGORITHMS,
    STYLES,
    SampleSpec,
    build_sample_library,
    lycoris_factorization,
    make_state_dict,
    module_shapes,
    planned_modules,
    write_lora,
)

SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".lora_mid.weight", ".lora_A.weight", ".lora_B.weight",
            ".down.weight", ".up.weight", ".alpha", ".dora_scale", ".lora_magnitude_vector.weight",
            ".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b", ".lokr_w1", ".lokr_w2", ".lokr_w2_a", ".lokr_w2_b",
            ".diff", ".diff_b")
SD_PEFT = {("sd1", "peft"), ("sd2", "peft"), ("sdxl", "peft")}  # generator-only styles, not in the demo library


def split(key: str) -> tuple[str, str]:
    for suf in sorted(SUFFIXES, key=len, reverse=True):
        if key.endswith(suf):
            return key[: -len(suf)], suf[1:]
    raise AssertionError(f"unknown param suffix in {key!r}")


def grouped(sd: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for k, v in sd.items():
        mod, param = split(k)
        out.setdefault(mod, {})[param] = v
    return out


def delta_shape(p: dict[str, np.ndarray], conv: bool) -> tuple[int, ...]:
    """Shape of ΔW rebuilt from the factors the way ComfyUI/LyCORIS do (without materialising it)."""
    if "diff" in p:
        return p["diff"].shape
    if "lora_mid.weight" in p:
        up, mid, down = p["lora_up.weight"], p["lora_mid.weight"], p["lora_down.weight"]
        assert up.shape[1] == mid.shape[1] and mid.shape[0] == down.shape[0] and down.shape[2:] == (1, 1)
        return (up.shape[0], down.shape[1], *mid.shape[2:])
    for up_k, down_k in (("lora_up.weight", "lora_down.weight"), ("lora_B.weight", "lora_A.weight"),
                         ("up.weight", "down.weight")):
        if up_k in p:
            up, down = p[up_k], p[down_k]
            assert up.shape[1] == down.shape[0]
            if conv:
                assert up.ndim == 4 and up.shape[2:] == (1, 1) and down.ndim == 4
            return (up.shape[0], *down.shape[1:])
    if "hada_w1_a" in p:
        w1 = (p["hada_w1_a"].shape[0], p["hada_w1_b"].shape[1])
        w2 = (p["hada_w2_a"].shape[0], p["hada_w2_b"].shape[1])
        assert w1 == w2 and p["hada_w1_a"].shape[1] == p["hada_w1_b"].shape[0]
        return w1
    w1 = p["lokr_w1"].shape
    if "lokr_w2" in p:
        w2 = p["lokr_w2"].shape
    else:
        assert p["lokr_w2_a"].shape[1] == p["lokr_w2_b"].shape[0]
        w2 = (p["lokr_w2_a"].shape[0], p["lokr_w2_b"].shape[1])
    return (w1[0] * w2[0], w1[1] * math.prod(w2[1:]))


def flat(shape: tuple[int, ...]) -> tuple[int, int]:
    return shape[0], math.prod(shape[1:])


COMBOS = [(fam, sty, algo) for fam, styles in STYLES.items() for sty, st in styles.items() for algo in ALGORITHMS
          if st.params == "kohya" or algo == "lora" or (algo == "full" and st.params == "peft")]


@pytest.mark.parametrize(("family", "style", "algorithm"), COMBOS)
def test_every_combination_has_real_keys_and_shapes(family: str, style: str, algorithm: str) -> None:
    conv = algorithm.startswith("locon") or algorithm in ("loha", "lokr")
    shapes = module_shapes(family, style, conv=conv)
    # a handful of modules, incl. a k×k conv and a text-encoder module where the style has them (keeps the test fast)
    te = [k for k in shapes if k.startswith(("lora_te", "text_encoder"))]
    small = sorted(shapes, key=lambda k: math.prod(shapes[k].weight_shape))  # "full" stores whole weights
    base = small[:1] if algorithm == "full" else list(shapes)[:3]
    pick = base + [k for k, s in shapes.items() if s.spatial][:2] + te[:1]
    sd = make_state_dict(family, style, algorithm=algorithm, rank=4, conv=conv, modules=pick, seed=1)
    groups = grouped(sd)
    assert set(groups) == set(pick)
    kind = STYLES[family][style].params
    for mod, params in groups.items():
        s = shapes[mod]
        got = delta_shape(params, s.is_conv and algorithm in ("lora", "locon", "locon_tucker"))
        assert flat(got) == flat(s.weight_shape), (mod, got, s.weight_shape)
        if algorithm == "full":
            assert params["diff"].shape == s.weight_shape and params["diff_b"].shape == (s.out_features,)
            assert "alpha" not in params
        elif kind == "kohya":
            assert params["alpha"].shape == ()
        else:
            assert "alpha" not in params
        for v in params.values():
            assert v.dtype == np.float16 and np.isfinite(v.astype(np.float32)).all()


def test_key_forms_per_style() -> None:
    k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    assert k in module_shapes("sd1")
    assert "lora_te_text_model_encoder_layers_11_mlp_fc2" in module_shapes("sd1")
    assert "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0" in module_shapes("sd1", "peft")
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_attn2_to_k" in module_shapes("sdxl", "diffusers")
    assert not any("down_blocks_0_attentions" in m or "down_blocks_3" in m for m in module_shapes("sdxl", "diffusers"))
    assert "diffusion_model.double_blocks.0.img_attn.qkv" in module_shapes("flux", "comfy")
    assert "transformer.single_transformer_blocks.37.norm.linear" in module_shapes("flux", "peft")
    assert "double_blocks.18.processor.proj_lora2" in module_shapes("flux", "xlabs")
    assert "lora_transformer_single_transformer_blocks_0_proj_mlp" in module_shapes("flux", "onetrainer")
    assert "lycoris_transformer_blocks_0_attn_to_q" in module_shapes("flux", "lycoris")
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj" in module_shapes("flux")
    assert "lora_unet_blocks_39_cross_attn_o" in module_shapes("wan", "musubi")
    assert "diffusion_model.blocks.0.ffn.2" in module_shapes("wan", "comfy")
    assert "transformer.blocks.0.attn2.add_k_proj" in module_shapes("wan", "diffusers", variant="14b-i2v")
    assert "lora_unet_double_blocks_19_txt_mod_linear" in module_shapes("hunyuan_video")
    assert module_shapes("wan", "kohya") == module_shapes("wan", "musubi")  # kohya = musubi for video models


def test_module_counts() -> None:
    assert len(module_shapes("sd1", te=False)) == 16 * 12  # 16 attentions × (proj_in/out + 10 linears)
    assert len(module_shapes("sd1", conv=True, te=False)) == 278
    assert len([k for k in module_shapes("sd1") if k.startswith("lora_te_")]) == 12 * 6
    assert len([k for k in module_shapes("sd2") if k.startswith("lora_te_")]) == 23 * 6
    assert len(module_shapes("sdxl", te=False)) == 722 == len(module_shapes("sdxl", "diffusers", te=False))
    assert len(module_shapes("sdxl", conv=True, te=False)) == 788
    assert len(module_shapes("flux", te=False)) == 19 * 10 + 38 * 3
    assert len(module_shapes("hunyuan_video")) == 20 * 10 + 40 * 3
    assert len(module_shapes("wan", variant="1.3b")) == 30 * 10
    assert len(module_shapes("wan", variant="14b-i2v")) == 40 * 12


def test_spot_shapes_against_reference_numbers() -> None:
    sd = make_state_dict("sdxl", rank=4, modules=["lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k",
                                                  "lora_te2_text_model_encoder_layers_31_mlp_fc1"])
    assert sd["lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight"].shape == (4, 2048)
    assert sd["lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight"].shape == (640, 4)
    assert sd["lora_te2_text_model_encoder_layers_31_mlp_fc1.lora_up.weight"].shape == (5120, 4)
    x = module_shapes("sdxl", conv=True)
    assert x["lora_unet_middle_block_1_transformer_blocks_9_ff_net_0_proj"].weight_shape == (10240, 1280)
    assert x["lora_unet_output_blocks_2_2_conv"].weight_shape == (1280, 1280, 3, 3)
    assert x["lora_unet_output_blocks_5_2_conv"].weight_shape == (640, 640, 3, 3)
    assert x["lora_unet_input_blocks_3_0_op"].weight_shape == (320, 320, 3, 3)
    assert x["lora_unet_input_blocks_4_0_skip_connection"].weight_shape == (640, 320, 1, 1)
    assert x["lora_unet_output_blocks_0_0_in_layers_2"].weight_shape == (1280, 2560, 3, 3)
    assert x["lora_unet_output_blocks_8_0_emb_layers_1"].weight_shape == (320, 1280)
    assert "lora_unet_output_blocks_6_1_proj_in" not in x and "lora_unet_input_blocks_1_1_proj_in" not in x

    s1, s2 = module_shapes("sd1", conv=True), module_shapes("sd2")
    base = "lora_unet_down_blocks_0_attentions_0"
    assert s1[f"{base}_transformer_blocks_0_attn2_to_k"].weight_shape == (320, 768)
    assert s2[f"{base}_transformer_blocks_0_attn2_to_k"].weight_shape == (320, 1024)
    assert s1[f"{base}_proj_in"].weight_shape == (320, 320, 1, 1) and s2[f"{base}_proj_in"].weight_shape == (320, 320)
    assert s1[f"{base}_transformer_blocks_0_ff_net_0_proj"].weight_shape == (2560, 320)
    assert s1["lora_unet_down_blocks_0_resnets_0_conv1"].weight_shape == (320, 320, 3, 3)
    assert s1["lora_unet_up_blocks_1_resnets_2_conv_shortcut"].weight_shape == (1280, 1920, 1, 1)
    assert s1["lora_unet_up_blocks_3_resnets_0_conv1"].weight_shape == (320, 960, 3, 3)
    assert "lora_unet_down_blocks_3_downsamplers_0_conv" not in s1
    assert s2["lora_te_text_model_encoder_layers_22_mlp_fc1"].weight_shape == (4096, 1024)

    f = make_state_dict("flux", rank=4, modules=["lora_unet_single_blocks_0_linear1", "lora_unet_single_blocks_37_linear2",
                                                 "lora_unet_double_blocks_18_img_mod_lin"])
    assert f["lora_unet_single_blocks_0_linear1.lora_up.weight"].shape == (21504, 4)
    assert f["lora_unet_single_blocks_37_linear2.lora_down.weight"].shape == (4, 15360)
    assert f["lora_unet_double_blocks_18_img_mod_lin.lora_up.weight"].shape == (18432, 4)
    assert module_shapes("flux", "peft")["transformer.single_transformer_blocks.0.proj_out"].weight_shape == (3072, 15360)
    assert module_shapes("flux", "xlabs")["double_blocks.0.processor.qkv_lora2"].weight_shape == (9216, 3072)

    for style, key in (("musubi", "lora_unet_blocks_0_self_attn_q"), ("comfy", "diffusion_model.blocks.0.self_attn.q"),
                       ("diffusers", "transformer.blocks.0.attn1.to_q")):
        assert module_shapes("wan", style, variant="14b")[key].weight_shape == (5120, 5120)
    assert module_shapes("wan", variant="1.3b")["lora_unet_blocks_29_ffn_0"].weight_shape == (8960, 1536)
    assert module_shapes("wan", variant="5b")["lora_unet_blocks_0_ffn_2"].weight_shape == (3072, 14336)
    assert module_shapes("wan", variant="14b")["lora_unet_blocks_0_ffn_0"].weight_shape == (13824, 5120)
    assert "lora_unet_blocks_0_cross_attn_k_img" in module_shapes("wan", variant="14b-i2v")
    assert not any("k_img" in k for k in module_shapes("wan", variant="14b"))

    h = module_shapes("hunyuan_video")
    assert h["lora_unet_single_blocks_39_linear1"].weight_shape == (21504, 3072)
    assert h["lora_unet_single_blocks_0_linear2"].weight_shape == (3072, 15360)
    assert h["lora_unet_double_blocks_0_img_mod_linear"].weight_shape == (18432, 3072)
    assert h["lora_unet_double_blocks_0_txt_mlp_fc1"].weight_shape == (12288, 3072)


def test_sd3_variants() -> None:
    med = module_shapes("sd3", te=False)
    assert med["lora_unet_joint_blocks_0_x_block_attn_qkv"].weight_shape == (4608, 1536)
    assert med["lora_unet_joint_blocks_0_x_block_mlp_fc1"].weight_shape == (6144, 1536)
    assert med["lora_unet_joint_blocks_0_x_block_adaLN_modulation_1"].weight_shape == (9216, 1536)
    last = sorted(k for k in med if k.startswith("lora_unet_joint_blocks_23_context_block"))
    assert last == ["lora_unet_joint_blocks_23_context_block_adaLN_modulation_1",
                    "lora_unet_joint_blocks_23_context_block_attn_qkv"]
    assert med[last[0]].weight_shape == (3072, 1536)
    assert not any("attn2" in k for k in med)
    m35 = module_shapes("sd3", variant="3.5-medium", te=False)
    dual = sorted({int(k.split("_")[4]) for k in m35 if "attn2" in k})
    assert dual == list(range(13))
    assert m35["lora_unet_joint_blocks_12_x_block_adaLN_modulation_1"].weight_shape == (13824, 1536)
    assert m35["lora_unet_joint_blocks_13_x_block_adaLN_modulation_1"].weight_shape == (9216, 1536)
    large = module_shapes("sd3", variant="large", te=False)
    assert large == module_shapes("sd3", variant="3.5-large", te=False)
    assert large["lora_unet_joint_blocks_37_x_block_attn_qkv"].weight_shape == (7296, 2432)
    assert large["lora_unet_joint_blocks_0_x_block_mlp_fc1"].weight_shape == (9728, 2432)
    assert "lora_unet_joint_blocks_38_x_block_attn_qkv" not in large


def test_algorithm_layouts() -> None:
    conv = "lora_unet_down_blocks_1_resnets_0_conv1"  # (640, 320, 3, 3)
    lin = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"  # (640, 640)
    tucker = make_state_dict("sd1", algorithm="locon_tucker", rank=4, modules=[conv, lin])
    assert tucker[f"{conv}.lora_down.weight"].shape == (4, 320, 1, 1)
    assert tucker[f"{conv}.lora_mid.weight"].shape == (4, 4, 3, 3)
    assert tucker[f"{conv}.lora_up.weight"].shape == (640, 4, 1, 1)
    assert f"{lin}.lora_mid.weight" not in tucker and tucker[f"{lin}.lora_down.weight"].shape == (4, 640)
    locon = make_state_dict("sd1", algorithm="locon", rank=4, conv_rank=2, conv_alpha=1, modules=[conv, lin])
    assert locon[f"{conv}.lora_down.weight"].shape == (2, 320, 3, 3) and float(locon[f"{conv}.alpha"]) == 1.0
    assert locon[f"{lin}.lora_down.weight"].shape == (4, 640) and float(locon[f"{lin}.alpha"]) == 4.0
    loha = make_state_dict("sd1", algorithm="loha", rank=4, alpha=2, conv=True, modules=[conv])
    assert loha[f"{conv}.hada_w1_a"].shape == (640, 4) and loha[f"{conv}.hada_w2_b"].shape == (4, 320 * 9)
    assert float(loha[f"{conv}.alpha"]) == 2.0
    lokr = make_state_dict("sd1", algorithm="lokr", rank=4, modules=[lin])
    assert lokr[f"{lin}.lokr_w1"].shape == (20, 20)  # 640 → (20, 32)
    assert lokr[f"{lin}.lokr_w2_a"].shape == (32, 4) and lokr[f"{lin}.lokr_w2_b"].shape == (4, 32)
    full = make_state_dict("sd1", algorithm="lokr_full", rank=8, factor=8, modules=[lin])
    assert full[f"{lin}.lokr_w1"].shape == (8, 8) and full[f"{lin}.lokr_w2"].shape == (80, 80)
    assert float(full[f"{lin}.alpha"]) == 8.0  # LyCORIS: alpha = dim when both factors are full (scale 1)
    assert lycoris_factorization(1024) == (32, 32) and lycoris_factorization(3072, 16) == (16, 192)
    assert lycoris_factorization(127) == (1, 127) and lycoris_factorization(360, 8) == (8, 45)
    dora = make_state_dict("sd1", rank=4, dora=True, conv=True, modules=[conv, lin])
    assert dora[f"{conv}.dora_scale"].shape == (640, 1, 1, 1) and dora[f"{lin}.dora_scale"].shape == (640, 1)
    assert (dora[f"{lin}.dora_scale"] > 0).all()
    peft = make_state_dict("flux", "peft", rank=4, dora=True, modules=["transformer.transformer_blocks.0.attn.to_q"])
    assert set(peft) == {f"transformer.transformer_blocks.0.attn.to_q.{p}"
                         for p in ("lora_A.weight", "lora_B.weight", "lora_magnitude_vector.weight")}
    assert peft["transformer.transformer_blocks.0.attn.to_q.lora_magnitude_vector.weight"].shape == (3072,)
    xl = make_state_dict("flux", "xlabs", rank=4, modules=["double_blocks.0.processor.qkv_lora1"])
    assert {k: v.shape for k, v in xl.items()} == {"double_blocks.0.processor.qkv_lora1.down.weight": (4, 3072),
                                                   "double_blocks.0.processor.qkv_lora1.up.weight": (9216, 4)}


def test_dtype_seed_and_values() -> None:
    mods = ["lora_unet_double_blocks_0_img_attn_qkv"]
    a = make_state_dict("flux", modules=mods, seed=3)
    b = make_state_dict("flux", modules=mods, seed=3)
    c = make_state_dict("flux", modules=mods, seed=4, dtype="float32", alpha=8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a[f"{mods[0]}.lora_up.weight"], c[f"{mods[0]}.lora_up.weight"].astype(np.float16))
    assert c[f"{mods[0]}.lora_up.weight"].dtype == np.float32 and float(c[f"{mods[0]}.alpha"]) == 8.0
    down = a[f"{mods[0]}.lora_down.weight"].astype(np.float32)
    assert 0.015 < down.std() < 0.025 and np.isfinite(down).all()


def test_modules_filter_and_errors() -> None:
    sel = planned_modules("sd1", modules=["*_attn2_to_k"])
    assert len(sel) == 16 and all(k.endswith("attn2_to_k") for k in sel)
    with pytest.raises(UsageError):
        make_state_dict("sd1", modules=["lora_unet_nope"])
    with pytest.raises(UsageError):
        make_state_dict("sd1", modules=["*no_such_thing*"])
    with pytest.raises(UsageError):
        make_state_dict("sd9")
    with pytest.raises(UsageError):
        make_state_dict("sd1", "xlabs")
    with pytest.raises(UsageError):
        make_state_dict("flux", "peft", algorithm="loha")
    with pytest.raises(UsageError):
        make_state_dict("flux", algorithm="dora")
    with pytest.raises(UsageError):
        make_state_dict("wan", variant="99b")
    with pytest.raises(UsageError):
        make_state_dict("flux", variant="dev")
    with pytest.raises(UsageError):
        make_state_dict("sd1", dtype="bfloat16")
    assert module_shapes("sd15") == module_shapes("sd1")


def test_write_loads_and_is_atomic(tmp_path: Path) -> None:
    meta = {"ss_network_dim": "4", "modelspec.title": "x"}
    out = write_lora(tmp_path / "sub" / "a.safetensors", "sd1", metadata=meta, rank=4, te=False,
                     modules=["*_attn1_to_q"])
    assert out == tmp_path / "sub" / "a.safetensors"
    assert os.listdir(out.parent) == ["a.safetensors"]  # no temp file left behind
    with safe_open(str(out), "np") as f:
        assert f.metadata() == meta
        assert len(f.keys()) == 16 * 3
        key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
        assert f.get_tensor(f"{key}.lora_down.weight").shape == (4, 320)
        assert f.get_tensor(f"{key}.lora_up.weight").dtype == np.float16
        assert f.get_tensor(f"{key}.alpha").shape == ()

    # a failing write leaves the old file intact and no temp file
    before = out.read_bytes()
    with pytest.raises(UsageError):
        write_lora(out, "sd1", metadata={"ss_steps": 100}, modules=["*_attn1_to_q"])  # type: ignore[dict-item]
    import lorawb_core.samples as samples

    def boom(*_a, **_k):
        raise OSError("disk full")

    orig = os.replace
    samples.os.replace = boom  # fail after the temp file was written
    try:
        with pytest.raises(OSError):
            write_lora(out, "sd1", modules=["*_attn1_to_q"])
    finally:
        samples.os.replace = orig
    assert out.read_bytes() == before
    assert os.listdir(out.parent) == ["a.safetensors"]


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SampleSpec]]:
    root = tmp_path_factory.mktemp("lib")
    return root, build_sample_library(root)


def test_library_writes_what_it_lists(library: tuple[Path, list[SampleSpec]]) -> None:
    root, specs = library
    on_disk = sorted(p for p in root.rglob("*") if p.is_file())
    assert on_disk == sorted(s.path for s in specs)
    assert 16 <= len(specs) <= 26
    assert sum(p.stat().st_size for p in on_disk) < 60_000_000
    assert {s.path.parent.relative_to(root).parts[0] for s in specs} == {"characters", "styles", "concepts", "flux",
                                                                          "video"}
    for s in specs:
        with safe_open(str(s.path), "np") as f:
            keys = list(f.keys())
            assert {split(k)[0] for k in keys} == s.modules, s.path
            assert (f.metadata() or {}) == s.metadata
            if s.style in ("kohya", "musubi", "onetrainer", "lycoris") and s.algorithm != "full":
                assert any(k.endswith(".alpha") for k in keys)
        assert s.algorithm in ALGORITHMS and s.style in STYLES[s.family]


def test_library_coverage_and_fixtures(library: tuple[Path, list[SampleSpec]]) -> None:
    _, specs = library
    assert {s.family for s in specs} == set(STYLES)
    assert {(s.family, s.style) for s in specs} == {(f, st) for f, sts in STYLES.items() for st in sts} - SD_PEFT
    assert {s.algorithm for s in specs} == set(ALGORITHMS)
    assert any(s.dora for s in specs)
    assert {s.variant for s in specs if s.family == "sd3"} == {"medium", "3.5-medium", "3.5-large"}
    assert {s.variant for s in specs if s.family == "wan"} >= {"1.3b", "5b", "14b-i2v"}
    by_name = {s.path.name: s for s in specs}
    xss = by_name["xss_fixture.safetensors"].metadata
    assert xss["modelspec.title"] == "<img src=x onerror=alert(1)>"
    char = by_name["mychar_sd15_v2.safetensors"]
    assert json.loads(char.metadata["ss_tag_frequency"]) == {"10_mychar": {"mychar": 20, "1girl": 18, "smile": 5}}
    assert {"ss_base_model_version", "ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_output_name",
            "ss_num_train_images", "ss_steps", "ss_learning_rate", "ss_sd_model_name"} <= set(char.metadata)
    assert by_name["ponychar_xl-000010.safetensors"].metadata["ss_sd_model_name"] == "ponyDiffusionV6XL.safetensors"
    peft = by_name["flux_ghibli_peft.safetensors"]
    cfg = json.loads(peft.metadata["lora_adapter_metadata"])
    assert cfg["r"] == peft.rank and cfg["lora_alpha"] == 2 * peft.rank
    assert any("modelspec.trigger_phrase" in s.metadata and "<" not in s.metadata["modelspec.title"] for s in specs)
    assert by_name["mychar_sd15_v2.safetensors"].detected_family == "sd15"


def test_library_is_deterministic(tmp_path: Path, library: tuple[Path, list[SampleSpec]]) -> None:
    root, specs = library
    again = build_sample_library(tmp_path)
    assert [s.path.relative_to(tmp_path) for s in again] == [s.path.relative_to(root) for s in specs]
    for a, b in zip(again, specs, strict=True):
        assert a.path.read_bytes() == b.path.read_bytes(), a.path.name
