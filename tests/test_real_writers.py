"""LoRA files written by the real libraries (peft/diffusers, LyCORIS): keys, shapes, metadata.

These pin down what the libraries actually write today (see tests/real_writers.py for the
key patterns); each file is produced once per module run and shared by the checks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

try:
    from tests import real_writers as rw  # noqa: E402
except ImportError:  # pragma: no cover - tests/ on sys.path instead of the repo root
    import real_writers as rw  # noqa: E402

WRITERS = dict(rw.ALL_WRITERS)
FAMILIES = {"sd1", "sd2", "sdxl", "sd3", "flux", "wan", "hunyuan_video"}
ALGORITHMS = {"lora", "locon", "loha", "lokr", "dora", "ia3", "glora", "full", "oft", "boft"}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    cache: dict[str, rw.WrittenLora] = {}
    base = tmp_path_factory.mktemp("real_loras")

    def get(name: str) -> rw.WrittenLora:
        if name.startswith("lycoris"):
            pytest.importorskip("lycoris")
        if name not in cache:
            cache[name] = WRITERS[name](base)
        return cache[name]

    return get


def tensor(w: rw.WrittenLora, key: str) -> torch.Tensor:
    with safe_open(str(w.path), framework="pt") as f:
        return f.get_tensor(key)


def adapter_meta(w: rw.WrittenLora) -> dict:
    return json.loads(w.metadata["lora_adapter_metadata"])


def layer_indices(keys, pattern: str) -> set[int]:
    rx = re.compile(pattern)
    return {int(m.group(1)) for k in keys if (m := rx.search(k))}


# --------------------------------------------------------------------------------------
# Every writer


@pytest.mark.parametrize("name", list(WRITERS))
def test_writer_produces_consistent_file(written, name):
    w = written(name)
    assert w.path.is_file() and w.path.suffix == ".safetensors"
    with safe_open(str(w.path), framework="pt") as f:
        keys = list(f.keys())
        for key in keys:
            t = f.get_tensor(key)
            assert t.device.type == "cpu"
            if t.is_floating_point():
                assert torch.isfinite(t.float()).all(), key
    assert sorted(keys) == sorted(w.state_dict_keys)
    assert set(w.shapes) == set(keys)
    assert w.family in FAMILIES and w.algorithm in ALGORITHMS
    assert w.rank > 0 and w.writer
    assert len(rw.module_names_from_keys(keys)) == w.expected_module_count, rw.describe(w)


@pytest.mark.parametrize("name", [n for n in WRITERS if n.startswith("peft_")])
def test_peft_pairs_have_the_rank(written, name):
    w = written(name)
    for key, shape in w.shapes.items():
        if key.endswith((".lora_A.weight", ".lora.down.weight", ".lora_linear_layer.down.weight")):
            assert shape[0] == w.rank, key
        elif key.endswith((".lora_B.weight", ".lora.up.weight", ".lora_linear_layer.up.weight")):
            assert shape[1] == w.rank, key
    assert not any(k.endswith(".alpha") for k in w.state_dict_keys)  # PEFT keeps alpha in the config
    meta = adapter_meta(w)
    assert meta, "save_lora_weights(..._lora_adapter_metadata=...) writes lora_adapter_metadata"
    for k, v in meta.items():
        if k.endswith(".r"):
            assert v == w.rank
        if k.endswith(".lora_alpha"):
            assert v == w.alpha
    assert w.metadata["format"] == "pt"


# --------------------------------------------------------------------------------------
# SD1.x / SD2.x / SDXL (diffusers training-script key style)


def test_sd15_keys_and_shapes(written):
    w = written("peft_sd15")
    keys = w.state_dict_keys
    unet = [k for k in keys if k.startswith("unet.")]
    te = [k for k in keys if k.startswith("text_encoder.")]
    assert len(unet) + len(te) == len(keys)
    assert all(k.endswith((".lora.down.weight", ".lora.up.weight")) for k in unet)
    assert all(k.endswith((".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight")) for k in te)
    assert w.shapes["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora.down.weight"] == (4, 768)
    assert w.shapes["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora.up.weight"] == (320, 4)
    assert w.shapes["unet.up_blocks.3.attentions.2.transformer_blocks.0.attn1.to_out.0.lora.up.weight"] == (320, 4)
    assert w.shapes["unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight"] == (4, 1280)
    # transformers 5: CLIPTextModel has no `text_model.` level any more
    assert w.shapes["text_encoder.encoder.layers.11.self_attn.out_proj.lora_linear_layer.up.weight"] == (768, 4)
    assert layer_indices(te, r"\.layers\.(\d+)\.") == set(range(12))
    assert not any("down_blocks.3.attentions" in k for k in keys)  # SD1 has no attention at the lowest level
    assert w.expected_module_count == 128 + 48
    meta = adapter_meta(w)
    assert meta["unet.r"] == 4 and meta["unet.lora_alpha"] == 4
    assert sorted(meta["unet.target_modules"]) == sorted(rw.SD_UNET_TARGETS)
    assert meta["text_encoder.r"] == 4
    assert tensor(w, unet[0]).dtype == torch.float32


def test_sd15_unet_only_and_te_only(written):
    unet = written("peft_sd15_unet")
    assert all(k.startswith("unet.") for k in unet.state_dict_keys) and unet.expected_module_count == 128
    assert set(json.loads(unet.metadata["lora_adapter_metadata"])) == {
        k for k in adapter_meta(written("peft_sd15")) if k.startswith("unet.")
    }
    te = written("peft_sd15_te")
    assert all(k.startswith("text_encoder.encoder.layers.") for k in te.state_dict_keys)
    assert te.expected_module_count == 48


def test_sd15_text_model_layout_matches_transformers4_files(written):
    w = written("peft_sd15_text_model_layout")
    te = [k for k in w.state_dict_keys if k.startswith("text_encoder.")]
    assert te and all(k.startswith("text_encoder.text_model.encoder.layers.") for k in te)
    assert w.shapes["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight"] == (
        4,
        768,
    )


def test_sd15_peft_key_style(written):
    w = written("peft_sd15_peft_keys")
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in w.state_dict_keys)
    assert w.shapes["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight"] == (4, 768)
    assert w.shapes["text_encoder.encoder.layers.0.self_attn.q_proj.lora_B.weight"] == (768, 4)


def test_sd2_shapes(written):
    w = written("peft_sd2")
    assert w.shapes["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora.down.weight"] == (4, 1024)
    te = [k for k in w.state_dict_keys if k.startswith("text_encoder.")]
    assert layer_indices(te, r"\.layers\.(\d+)\.") == set(range(23))
    assert w.shapes["text_encoder.encoder.layers.22.self_attn.q_proj.lora_linear_layer.up.weight"] == (1024, 4)


def test_sdxl_prefixes_and_shapes(written):
    w = written("peft_sdxl")
    keys = w.state_dict_keys
    prefixes = {k.split(".", 1)[0] for k in keys}
    assert prefixes == {"unet", "text_encoder", "text_encoder_2"}
    assert w.shapes["unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora.down.weight"] == (4, 2048)
    assert w.shapes["unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora.up.weight"] == (640, 4)
    assert w.shapes["unet.down_blocks.2.attentions.1.transformer_blocks.9.attn1.to_q.lora.up.weight"] == (1280, 4)
    assert w.shapes["unet.mid_block.attentions.0.transformer_blocks.9.attn2.to_v.lora.down.weight"] == (4, 2048)
    assert not any(
        k.startswith(("unet.down_blocks.0.attentions", "unet.down_blocks.3", "unet.up_blocks.2.attentions"))
        for k in keys
    )
    te1 = [k for k in keys if k.startswith("text_encoder.")]
    te2 = [k for k in keys if k.startswith("text_encoder_2.")]
    assert all(k.startswith("text_encoder.encoder.layers.") for k in te1)  # CLIPTextModel (transformers 5)
    assert all(k.startswith("text_encoder_2.text_model.encoder.layers.") for k in te2)  # CLIPTextModelWithProjection
    assert layer_indices(te1, r"\.layers\.(\d+)\.") == set(range(12))
    assert layer_indices(te2, r"\.layers\.(\d+)\.") == set(range(32))
    assert w.shapes["text_encoder_2.text_model.encoder.layers.31.self_attn.k_proj.lora_linear_layer.down.weight"] == (
        4,
        1280,
    )
    assert w.expected_module_count == 560 + 48 + 128
    meta = adapter_meta(w)
    assert {"unet.r", "text_encoder.r", "text_encoder_2.r"} <= set(meta)


def test_peft_dora_sdxl_magnitude_vectors(written):
    w = written("peft_dora_sdxl")
    mags = [k for k in w.state_dict_keys if k.endswith(".lora_magnitude_vector")]
    assert len(mags) == w.expected_module_count == 560
    k = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    assert w.shapes[f"{k}.lora_magnitude_vector"] == (640,)
    assert w.shapes[f"{k}.lora.down.weight"] == (4, 2048)
    assert (tensor(w, f"{k}.lora_magnitude_vector") > 0).all()
    assert adapter_meta(w)["unet.use_dora"] is True


def test_diffusers_kohya_export_sdxl(written):
    w = written("diffusers_kohya_sdxl")
    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    assert w.shapes[f"{key}.lora_down.weight"] == (4, 2048)
    assert w.shapes[f"{key}.lora_up.weight"] == (640, 4)
    alpha = tensor(w, f"{key}.alpha")
    assert alpha.dtype == torch.int64 and int(alpha) == 4
    assert w.metadata == {}
    assert all(k.startswith("lora_unet_") for k in w.state_dict_keys)


def test_diffusers_kohya_export_with_te_is_malformed_for_unet(written):
    w = written("diffusers_kohya_sdxl_with_te")
    unet = [k for k in w.state_dict_keys if k.startswith("lora_unet_")]
    assert unet and all(k.endswith(("_lora.down.weight", "_lora.up.weight")) for k in unet)
    assert w.shapes["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k_lora.down.weight"] == (
        4,
        2048,
    )
    assert w.shapes["lora_te1_encoder_layers_0_self_attn_q_proj.lora_down.weight"] == (4, 768)
    assert w.shapes["lora_te2_text_model_encoder_layers_31_self_attn_q_proj.lora_up.weight"] == (1280, 4)
    assert int(tensor(w, "lora_te1_encoder_layers_0_self_attn_q_proj.alpha")) == 4


# --------------------------------------------------------------------------------------
# DiT transformers (raw PEFT keys under `transformer.`)


def test_flux_keys_and_shapes(written):
    w = written("peft_flux")
    keys = w.state_dict_keys
    assert all(k.startswith("transformer.") and k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)
    assert w.shapes["transformer.single_transformer_blocks.0.proj_mlp.lora_B.weight"] == (12288, 4)
    assert w.shapes["transformer.single_transformer_blocks.37.proj_out.lora_A.weight"] == (4, 15360)
    assert w.shapes["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"] == (4, 3072)
    assert w.shapes["transformer.transformer_blocks.18.ff.net.0.proj.lora_B.weight"] == (12288, 4)
    assert w.shapes["transformer.transformer_blocks.18.ff_context.net.2.lora_A.weight"] == (4, 12288)
    assert w.shapes["transformer.proj_out.lora_B.weight"] == (64, 4)
    assert layer_indices(keys, r"^transformer\.transformer_blocks\.(\d+)\.") == set(range(19))
    assert layer_indices(keys, r"^transformer\.single_transformer_blocks\.(\d+)\.") == set(range(38))
    assert w.expected_module_count == 19 * 12 + 38 * 5 + 1
    meta = adapter_meta(w)
    assert meta["transformer.r"] == 4 and meta["transformer.lora_alpha"] == 8
    assert tensor(w, keys[0]).dtype == torch.bfloat16


def test_flux_dora(written):
    w = written("peft_dora_flux")
    assert w.shapes["transformer.single_transformer_blocks.0.proj_mlp.lora_magnitude_vector"] == (12288,)
    assert sum(k.endswith(".lora_magnitude_vector") for k in w.state_dict_keys) == w.expected_module_count


def test_sd3_medium_and_large(written):
    w = written("peft_sd3")
    keys = w.state_dict_keys
    assert all(k.startswith("transformer.transformer_blocks.") for k in keys)
    assert layer_indices(keys, r"transformer_blocks\.(\d+)\.") == set(range(24))
    assert w.shapes["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"] == (4, 1536)
    assert w.shapes["transformer.transformer_blocks.23.attn.add_k_proj.lora_B.weight"] == (1536, 4)
    assert not any(k.startswith("transformer.transformer_blocks.23.attn.to_add_out") for k in keys)  # context_pre_only
    assert w.expected_module_count == 24 * 8 - 1
    large = written("peft_sd35_large")
    assert layer_indices(large.state_dict_keys, r"transformer_blocks\.(\d+)\.") == set(range(38))
    assert large.shapes["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"] == (4, 2432)


def test_wan_variants(written):
    w = written("peft_wan_1.3b")
    keys = w.state_dict_keys
    assert all(k.startswith("transformer.blocks.") for k in keys)
    assert layer_indices(keys, r"^transformer\.blocks\.(\d+)\.") == set(range(30))
    assert w.shapes["transformer.blocks.0.attn1.to_q.lora_A.weight"] == (4, 1536)
    assert w.shapes["transformer.blocks.29.attn2.to_k.lora_A.weight"] == (4, 1536)
    assert w.shapes["transformer.blocks.0.ffn.net.0.proj.lora_B.weight"] == (8960, 4)
    assert w.shapes["transformer.blocks.0.ffn.net.2.lora_A.weight"] == (4, 8960)
    assert not any("add_k_proj" in k for k in keys)
    assert w.expected_module_count == 30 * 10
    i2v = written("peft_wan_i2v_14b")
    assert layer_indices(i2v.state_dict_keys, r"^transformer\.blocks\.(\d+)\.") == set(range(40))
    assert i2v.shapes["transformer.blocks.39.attn2.add_k_proj.lora_A.weight"] == (4, 5120)
    assert i2v.shapes["transformer.blocks.0.ffn.net.0.proj.lora_B.weight"] == (13824, 4)
    assert i2v.expected_module_count == 40 * 12


def test_hunyuan_video(written):
    w = written("peft_hunyuan_video")
    keys = w.state_dict_keys
    assert layer_indices(keys, r"^transformer\.transformer_blocks\.(\d+)\.") == set(range(20))
    assert layer_indices(keys, r"^transformer\.single_transformer_blocks\.(\d+)\.") == set(range(40))
    assert layer_indices(keys, r"token_refiner\.refiner_blocks\.(\d+)\.") == {0, 1}
    assert w.shapes["transformer.single_transformer_blocks.39.attn.to_k.lora_B.weight"] == (3072, 4)
    assert w.shapes["transformer.context_embedder.token_refiner.refiner_blocks.0.attn.to_q.lora_A.weight"] == (4, 3072)
    assert w.expected_module_count == 20 * 4 + 40 * 3 + 2 * 4


# --------------------------------------------------------------------------------------
# LyCORIS (kohya naming)

ATTN2_K = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
CONV1 = "lora_unet_down_blocks_0_resnets_0_conv1"
TE_Q = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"

LYCORIS_SUFFIXES = {
    "lycoris_lora": {"alpha", "lora_down.weight", "lora_up.weight"},
    "lycoris_locon": {"alpha", "lora_down.weight", "lora_up.weight"},
    "lycoris_locon_tucker": {"alpha", "lora_down.weight", "lora_up.weight", "lora_mid.weight"},
    "lycoris_loha": {"alpha", "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"},
    "lycoris_loha_tucker": {"alpha", "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"},
    "lycoris_lokr": {"alpha", "lokr_w1", "lokr_w2_a", "lokr_w2_b"},
    "lycoris_lokr_full_matrix": {"alpha", "lokr_w1", "lokr_w2"},
    "lycoris_lokr_decompose_both": {"alpha", "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b"},
    "lycoris_lokr_tucker": {"alpha", "lokr_w1", "lokr_w2_a", "lokr_w2_b", "lokr_t2"},
    "lycoris_lokr_dora": {"alpha", "dora_scale", "lokr_w1", "lokr_w2_a", "lokr_w2_b"},
    "lycoris_dora": {"alpha", "dora_scale", "lora_down.weight", "lora_up.weight"},
    "lycoris_ia3": {"weight", "on_input"},
    "lycoris_glora": {"alpha", "a1.weight", "a2.weight", "b1.weight", "b2.weight"},
    "lycoris_full": {"diff", "diff_b"},
    "lycoris_oft": {"alpha", "oft_blocks"},
    "lycoris_boft": {"alpha", "oft_blocks"},
}


@pytest.mark.parametrize("name", [n for n in WRITERS if n.startswith("lycoris_")])
def test_lycoris_naming(written, name):
    w = written(name)
    keys = w.state_dict_keys
    assert all(re.match(r"^lora_(unet|te)_[A-Za-z0-9_]+\.", k) for k in keys)
    assert all(k.count(".") <= 2 for k in keys)  # module key has no dots
    assert w.metadata.get("sshs_model_hash")
    if name in LYCORIS_SUFFIXES:
        assert {k.split(".", 1)[1] for k in keys} == LYCORIS_SUFFIXES[name]
    # save_weights(file, dtype=fp16, ...) casts every tensor, alpha and on_input included
    assert {tensor(w, k).dtype for k in keys[:50]} == {torch.float16}


def test_lycoris_lora_and_locon_shapes(written):
    lora = written("lycoris_lora")
    assert lora.shapes[f"{ATTN2_K}.lora_down.weight"] == (4, 768)
    assert lora.shapes[f"{ATTN2_K}.lora_up.weight"] == (320, 4)
    assert lora.shapes["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight"] == (4, 1280, 1, 1)  # 1x1 conv
    assert f"{CONV1}.lora_down.weight" not in lora.shapes  # no 3x3 convs without conv layers
    assert float(tensor(lora, f"{ATTN2_K}.alpha")) == 1.0
    assert lora.shapes[f"{TE_Q}.lora_down.weight"] == (4, 768)
    locon = written("lycoris_locon")
    assert locon.shapes[f"{CONV1}.lora_down.weight"] == (4, 320, 3, 3)
    assert locon.shapes[f"{CONV1}.lora_up.weight"] == (320, 4, 1, 1)
    assert {
        "lora_unet_conv_in",
        "lora_unet_conv_out",
        "lora_unet_time_embedding_linear_1",
    } <= rw.module_names_from_keys(locon.state_dict_keys)
    tucker = written("lycoris_locon_tucker")
    assert tucker.shapes[f"{CONV1}.lora_down.weight"] == (4, 320, 1, 1)
    assert tucker.shapes[f"{CONV1}.lora_mid.weight"] == (4, 4, 3, 3)
    assert tucker.shapes[f"{CONV1}.lora_up.weight"] == (320, 4, 1, 1)


def test_lycoris_loha_shapes(written):
    loha = written("lycoris_loha")
    assert loha.shapes[f"{ATTN2_K}.hada_w1_a"] == (320, 4)
    assert loha.shapes[f"{ATTN2_K}.hada_w1_b"] == (4, 768)
    assert loha.shapes[f"{CONV1}.hada_w2_b"] == (4, 320 * 9)
    tucker = written("lycoris_loha_tucker")
    assert tucker.shapes[f"{CONV1}.hada_t1"] == (4, 4, 3, 3)
    assert tucker.shapes[f"{CONV1}.hada_w1_a"] == (4, 320)  # transposed in Tucker form
    assert tucker.shapes[f"{CONV1}.hada_w1_b"] == (4, 320)
    assert tucker.shapes[f"{ATTN2_K}.hada_w1_a"] == (320, 4)  # linear layers unaffected


def _kron_shape(w: rw.WrittenLora, module: str) -> tuple[int, int]:
    s = w.shapes
    w1 = s.get(f"{module}.lokr_w1") or (s[f"{module}.lokr_w1_a"][0], s[f"{module}.lokr_w1_b"][1])
    if f"{module}.lokr_w2" in s:
        w2 = s[f"{module}.lokr_w2"][:2]
    elif f"{module}.lokr_t2" in s:
        w2 = (s[f"{module}.lokr_w2_a"][1], s[f"{module}.lokr_w2_b"][1])
    else:
        w2 = (s[f"{module}.lokr_w2_a"][0], s[f"{module}.lokr_w2_b"][1])
    return w1[0] * w2[0], w1[1] * w2[1]


def test_lycoris_lokr_variants(written):
    lokr = written("lycoris_lokr")
    assert _kron_shape(lokr, ATTN2_K) == (320, 768)
    assert lokr.shapes[f"{ATTN2_K}.lokr_w1"] == (16, 24)
    full = written("lycoris_lokr_full_matrix")
    assert f"{ATTN2_K}.lokr_w2_a" not in full.shapes
    assert full.shapes[f"{ATTN2_K}.lokr_w2"] == (20, 32)
    assert full.shapes[f"{CONV1}.lokr_w2"] == (20, 20, 3, 3)
    assert float(tensor(full, f"{ATTN2_K}.alpha")) == full.rank  # LyCORIS forces alpha = rank (scale 1)
    both = written("lycoris_lokr_decompose_both")
    mod = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_ff_net_0_proj"
    assert both.shapes[f"{mod}.lokr_w1_a"] == (64, 4)
    assert both.shapes[f"{mod}.lokr_w1_b"] == (4, 20)
    assert _kron_shape(both, mod) == (5120, 640)
    tucker = written("lycoris_lokr_tucker")
    assert tucker.shapes[f"{CONV1}.lokr_t2"] == (4, 4, 3, 3)
    assert _kron_shape(tucker, CONV1) == (320, 320)
    assert _kron_shape(tucker, ATTN2_K) == (320, 768)


def test_lycoris_dora(written):
    w = written("lycoris_dora")
    assert w.shapes[f"{ATTN2_K}.dora_scale"] == (320, 1)
    assert w.shapes["lora_unet_mid_block_attentions_0_proj_in.dora_scale"] == (1280, 1, 1, 1)
    assert (tensor(w, f"{ATTN2_K}.dora_scale") > 0).all()
    assert sum(k.endswith(".dora_scale") for k in w.state_dict_keys) == w.expected_module_count
    lokr = written("lycoris_lokr_dora")
    assert lokr.shapes[f"{ATTN2_K}.dora_scale"] == (320, 1)


def test_lycoris_ia3(written):
    w = written("lycoris_ia3")
    ff2 = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_2"
    assert w.shapes[f"{ATTN2_K}.weight"] == (320,)  # output-side vector
    assert w.shapes[f"{ff2}.weight"] == (1280,)  # train_on_input: input-side vector
    on_input = tensor(w, f"{ff2}.on_input")
    assert on_input.dtype == torch.float16 and int(on_input) == 1  # int64 buffer, cast by save_weights(dtype)
    assert int(tensor(w, f"{ATTN2_K}.on_input")) == 0
    assert not any(k.endswith(".alpha") for k in w.state_dict_keys)


def test_lycoris_glora_full_oft_boft(written):
    glora = written("lycoris_glora")
    assert glora.shapes[f"{ATTN2_K}.a1.weight"] == (768, 4)
    assert glora.shapes[f"{ATTN2_K}.a2.weight"] == (4, 768)
    assert glora.shapes[f"{ATTN2_K}.b1.weight"] == (320, 4)
    assert glora.shapes[f"{ATTN2_K}.b2.weight"] == (4, 768)
    assert glora.shapes[f"{CONV1}.b2.weight"] == (4, 320, 3, 3)  # GLoRA is applied to convs too
    full = written("lycoris_full")
    q = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    assert full.shapes[f"{q}.diff"] == (640, 640)
    assert full.shapes["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_out_0.diff_b"] == (640,)
    assert full.shapes[f"{TE_Q}.diff"] == (768, 768)
    oft = written("lycoris_oft")
    n, bs, bs2 = oft.shapes[f"{ATTN2_K}.oft_blocks"]
    assert bs == bs2 and n * bs == 320
    assert float(tensor(oft, f"{ATTN2_K}.alpha")) == 0.0  # OFT "alpha" is the constraint
    boft = written("lycoris_boft")
    m, n, bs, bs2 = boft.shapes[f"{ATTN2_K}.oft_blocks"]
    assert bs == bs2 and n * bs == 320 and m >= 1
    assert all(k.startswith("lora_unet_") for k in boft.state_dict_keys)


def test_lycoris_layouts_and_sd2(written):
    installed = written("lycoris_locon_te_installed")
    te = [k for k in installed.state_dict_keys if k.startswith("lora_te_")]
    assert te and all(k.startswith("lora_te_encoder_layers_") for k in te)
    sd2 = written("lycoris_locon_sd2")
    assert sd2.shapes[f"{ATTN2_K}.lora_down.weight"] == (4, 1024)
    assert sd2.shapes["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight"] == (4, 1280)  # linear proj_in
    assert sd2.shapes["lora_te_text_model_encoder_layers_22_mlp_fc1.lora_up.weight"] == (4096, 4)


def test_lycoris_presets_do_not_leak(written):
    """create_network mutates class attributes; the writer restores them."""
    pytest.importorskip("lycoris")
    from lycoris.kohya import LycorisNetworkKohya

    before = {a: getattr(LycorisNetworkKohya, a) for a in rw._LYCORIS_CLASS_ATTRS}
    written("lycoris_ia3")
    rw.write_lycoris(Path(written("lycoris_ia3").path.parent), "ia3", weight_name="again.safetensors")
    after = {a: getattr(LycorisNetworkKohya, a) for a in rw._LYCORIS_CLASS_ATTRS}
    assert before == after
