"""The real-host tests' checkpoint (tests/sd15_checkpoint.py) is an SD1.5 checkpoint in the original layout: diffusers'
own ldm → diffusers converters map every key of it onto diffusers' UNet / VAE / CLIP text model of those widths,
with nothing missing, nothing left over and every shape right; the LoRA written for it names modules that exist."""

from __future__ import annotations

import re

import pytest
import torch
from sd15_checkpoint import (
    ATTENTION_LEVELS,
    CHANNEL_MULT,
    CLIP_L,
    CONTEXT,
    MODEL_CHANNELS,
    VAE_CH,
    VAE_MULT,
    a1111_yaml,
    text_encoder_shapes,
    unet_shapes,
    vae_shapes,
    write_clip_tokenizer,
    write_lora,
)


def _meta(shapes: dict) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v, device="meta") for k, v in shapes.items()}


def _shapes(sd: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def _diffusers_unet():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=tuple(MODEL_CHANNELS * m for m in CHANNEL_MULT), cross_attention_dim=CONTEXT,
            attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * ATTENTION_LEVELS + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * ATTENTION_LEVELS)


def test_the_unet_is_what_diffusers_converts_into_its_unet():
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = _diffusers_unet()
    converted = convert_ldm_unet_checkpoint(_meta(unet_shapes()), dict(unet.config))
    assert _shapes(converted) == _shapes(unet.state_dict())


def test_the_vae_is_sds_vae_as_diffusers_converts_it():
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    with torch.device("meta"):
        vae = AutoencoderKL(block_out_channels=tuple(VAE_CH * m for m in VAE_MULT), latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            layers_per_block=2)
    converted = convert_ldm_vae_checkpoint(_meta(vae_shapes()), dict(vae.config))
    want = _shapes(vae.state_dict())
    got = _shapes(converted)
    assert set(got) == set(want)
    # the mid-block attention is a 1x1 conv in ldm and a linear in diffusers: same numbers, one shape squeezed
    assert all(got[k] == want[k] or got[k] == (*want[k], 1, 1) for k in want)


def test_the_text_encoder_is_clip_l():
    assert CLIP_L["hidden_size"] == CONTEXT
    shapes = text_encoder_shapes()
    assert shapes["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] == (49408, 768)
    assert sum(".mlp.fc1.weight" in k for k in shapes) == 12


def test_the_local_tokenizer_and_yaml(tmp_path):
    from transformers import CLIPTokenizer

    write_clip_tokenizer(tmp_path / "te")
    tok = CLIPTokenizer.from_pretrained(str(tmp_path / "te"))
    ids = tok("a red cat")["input_ids"]
    assert ids[0] == tok.bos_token_id == 0 and ids[-1] == tok.eos_token_id == 1 and len(ids) == 2 + 7
    text = a1111_yaml(tmp_path / "te")
    assert f"model_channels: {MODEL_CHANNELS}" in text and str(tmp_path / "te") in text


@pytest.mark.parametrize("prefix, shapes", [("lora_unet_", unet_shapes("")), ("lora_te", None)])
def test_every_lora_module_is_in_the_checkpoint(tmp_path, prefix, shapes):
    """Kohya names → the checkpoint's modules, the way A1111's Lora extension maps UNet names (the SD1.5 block
    arithmetic of its ``convert_diffusers_name_to_compvis``), and CLIP's names directly."""
    from safetensors import safe_open

    path = write_lora(tmp_path / "lora.safetensors")
    with safe_open(str(path), "pt") as f:
        modules = {k.split(".")[0] for k in f.keys() if k.startswith(prefix)}
    assert modules
    if shapes is None:
        te = {k.removeprefix("cond_stage_model.transformer.").replace(".", "_").removesuffix("_weight")
              for k in text_encoder_shapes()}
        # diffusers' convert_state_dict_to_kohya writes lora_te1_ (A1111 and Forge read it for SD1 as lora_te_)
        assert {re.sub(r"^lora_te1?_", "", m) for m in modules} <= te
        return
    ldm = {k.removesuffix(".weight").replace(".", "_") for k in shapes if k.endswith(".weight")}
    for module in modules:
        assert _compvis(module.removeprefix("lora_unet_")) in ldm, module


def _compvis(name: str) -> str:
    for pattern, build in (
        (r"down_blocks_(\d+)_attentions_(\d+)_(.+)", lambda a, b, r: f"input_blocks_{1 + 3 * a + b}_1_{r}"),
        (r"up_blocks_(\d+)_attentions_(\d+)_(.+)", lambda a, b, r: f"output_blocks_{3 * a + b}_1_{r}"),
        (r"mid_block_attentions_(\d+)_(.+)", lambda a, r: f"middle_block_1_{r}"),
    ):
        m = re.fullmatch(pattern, name)
        if m:
            groups = [int(g) if g.isdigit() else g for g in m.groups()]
            return build(*groups)
    raise AssertionError(f"not an attention module: {name}")
