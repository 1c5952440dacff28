"""Tiny diffusers pipelines built from configs (random weights, no downloads) and LoRAs for them written by peft.

The shapes that tell a family apart are kept real where our detection reads them (SD 1.x cross-attention width 768,
SDXL 2048 = CLIP-L 768 + CLIP-G 1280); everything else is a few channels wide. Tokenizers are built from a small
character vocabulary (CLIP BPE without merges, T5 unigram), so every pipeline runs from a prompt, offline.
LoRAs are written the way diffusers' training scripts do: ``add_adapter(LoraConfig)`` →
``get_peft_model_state_dict`` → ``convert_state_dict_to_diffusers`` (UNet pipelines) → ``save_lora_weights``.
"""

from __future__ import annotations

from pathlib import Path

import torch

CHARS = [chr(c) for c in range(33, 127)]


def clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in CHARS:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def t5_tokenizer():
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("▁" + c, -1.0) for c in CHARS] + \
        [(c, -2.0) for c in CHARS]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=77)


def _clip(hidden: int, *, projection: int | None = None, layers: int = 2, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(hidden_size=hidden, intermediate_size=32, num_hidden_layers=layers,
                         num_attention_heads=max(1, hidden // 64) if hidden >= 64 else 2,
                         vocab_size=len(CHARS) * 2 + 2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1, projection_dim=projection or hidden)
    model = CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)
    return model.eval()


def _vae(latent_channels: int = 4, **kw):
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    return AutoencoderKL(block_out_channels=(8,), in_channels=3, out_channels=3, latent_channels=latent_channels,
                         down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                         norm_num_groups=4, sample_size=16, **kw).eval()


def tiny_sd15():
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(2)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(8, 8, 16, 16),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768,
        attention_head_dim=4, norm_num_groups=4).eval()
    return StableDiffusionPipeline(vae=_vae(), text_encoder=_clip(768), tokenizer=clip_tokenizer(), unet=unet,
                                   scheduler=EulerDiscreteScheduler(steps_offset=1), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def tiny_sdxl():
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(3)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(8, 16, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=2048,
        transformer_layers_per_block=(1, 1, 2), attention_head_dim=4, norm_num_groups=4, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=4, projection_class_embeddings_input_dim=6 * 4 + 32
    ).eval()
    return StableDiffusionXLPipeline(vae=_vae(), text_encoder=_clip(768, seed=4), text_encoder_2=_clip(1280, projection=32, seed=5),
                                     tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(), unet=unet,
                                     scheduler=EulerDiscreteScheduler(steps_offset=1))


def tiny_flux():
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(6)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=2, num_single_layers=2,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8]).eval()
    torch.manual_seed(7)
    t5 = T5EncoderModel(T5Config(vocab_size=len(CHARS) * 2 + 3, d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                 num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)).eval()
    vae = _vae(latent_channels=1, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
               scaling_factor=1.5035)
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=_clip(32, seed=8),
                        tokenizer=clip_tokenizer(), text_encoder_2=t5, tokenizer_2=t5_tokenizer(),
                        transformer=transformer)


def tiny_sd3():
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(9)
    transformer = SD3Transformer2DModel(sample_size=16, patch_size=1, in_channels=4, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                        joint_attention_dim=32, pooled_projection_dim=64, out_channels=4).eval()
    t5 = T5EncoderModel(T5Config(vocab_size=len(CHARS) * 2 + 3, d_model=32, d_kv=8, d_ff=37, num_layers=1,
                                 num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)).eval()
    return StableDiffusion3Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=_vae(), transformer=transformer,
                                    text_encoder=_clip(32, projection=32, seed=10), tokenizer=clip_tokenizer(),
                                    text_encoder_2=_clip(32, projection=32, seed=11), tokenizer_2=clip_tokenizer(),
                                    text_encoder_3=t5, tokenizer_3=t5_tokenizer())


def tiny_wan():
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(12)
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                        in_channels=16, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32,
                                        num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        rope_max_seq_len=32).eval()
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    umt5 = UMT5EncoderModel(UMT5Config(vocab_size=len(CHARS) * 2 + 3, d_model=32, d_kv=8, d_ff=37, num_layers=1,
                                       num_heads=4, pad_token_id=0, eos_token_id=1)).eval()
    return WanPipeline(tokenizer=t5_tokenizer(), text_encoder=umt5, transformer=transformer, vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler())


BUILDERS = {"sd15": tiny_sd15, "sdxl": tiny_sdxl, "flux": tiny_flux}
WEIGHT_ONLY_BUILDERS = {"sd3": tiny_sd3, "wan": tiny_wan}  # built and patched, not sampled in the tests

_UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
_TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
_SD3_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]
_WAN_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]
_FLUX_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
                 "proj_mlp", "proj_out"]


def _adapter_state(model, targets: list[str], rank: int, alpha: float, seed: int) -> dict[str, torch.Tensor]:
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    model.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights="gaussian"),
                      adapter_name="writer")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name and "writer" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    state = get_peft_model_state_dict(model, adapter_name="writer")
    state = {k: v.detach().clone() for k, v in state.items()}
    model.delete_adapters("writer") if hasattr(model, "delete_adapters") else None
    return state


def write_lora(family: str, directory: str | Path, name: str, *, rank: int = 4, alpha: float | None = None, seed: int = 0,
               text_encoder: bool = True) -> Path:
    """A LoRA for the tiny ``family`` pipeline, written by peft + diffusers' ``save_lora_weights``."""
    from diffusers.utils import convert_state_dict_to_diffusers

    alpha = float(rank if alpha is None else alpha)
    pipe = {**BUILDERS, **WEIGHT_ONLY_BUILDERS}[family]()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if family in ("sd15", "sdxl"):
        unet = convert_state_dict_to_diffusers(_adapter_state(pipe.unet, _UNET_TARGETS, rank, alpha, seed))
        kw = {"unet_lora_layers": unet}
        if text_encoder:
            kw["text_encoder_lora_layers"] = convert_state_dict_to_diffusers(
                _adapter_state(pipe.text_encoder, _TE_TARGETS, rank, alpha, seed + 1))
            if family == "sdxl":
                kw["text_encoder_2_lora_layers"] = convert_state_dict_to_diffusers(
                    _adapter_state(pipe.text_encoder_2, _TE_TARGETS, rank, alpha, seed + 2))
    elif family in ("sd3", "wan"):
        targets = _SD3_TARGETS if family == "sd3" else _WAN_TARGETS
        kw = {"transformer_lora_layers": _adapter_state(pipe.transformer, targets, rank, alpha, seed)}
    else:
        kw = {"transformer_lora_layers": _adapter_state(pipe.transformer, _FLUX_TARGETS, rank, alpha, seed)}
        if text_encoder:
            kw["text_encoder_lora_layers"] = _adapter_state(pipe.text_encoder, _TE_TARGETS, rank, alpha, seed + 1)
    type(pipe).save_lora_weights(directory, weight_name=f"{name}.safetensors", **kw)
    path = directory / f"{name}.safetensors"
    if family == "sd3":  # a 32-wide SD3 has no width to detect it by: add the modelspec line trainers write
        from safetensors.torch import load_file, save_file

        save_file(load_file(str(path)), str(path), metadata={"modelspec.architecture": "stable-diffusion-3-medium"})
    return path
