"""A small SD1.5 checkpoint in the original (ldm) layout that A1111 v1.10.1 and Forge both load, written without any
host or ComfyUI code, plus what A1111 needs beside it to load it offline.

Forge recognizes a checkpoint by its shapes (huggingface_guess: SD1.5 = context 768 and 320 model channels) and
builds the VAE and text encoder from the full-size configs it ships, so only the UNet can shrink: 320 channels at
every level (``channel_mult`` 1,1,1,1) instead of 320/640/1280/1280; the VAE is SD's (ch 128, mult 1,2,4,4) and the
text encoder CLIP-L's shape. A1111 reads the yaml beside the checkpoint (written here with that UNet and a text
encoder ``version`` pointing at a local folder: CLIP-L's config and a character-level CLIP tokenizer), so it needs
no download either. Weights are seeded random values (N(0, 1/fan_in), norms 1, biases 0). The layout is checked
against diffusers' own ldm → diffusers converters in tests/test_sd15_checkpoint.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

MODEL_CHANNELS = 320
CHANNEL_MULT = (1, 1, 1, 1)
ATTENTION_LEVELS = 3  # SpatialTransformers at the first three levels, as in SD1.5
CONTEXT = 768
VAE_CH, VAE_MULT = 128, (1, 2, 4, 4)
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
          "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
          "projection_dim": 768}
CHARS = [chr(c) for c in range(33, 127)]


@dataclass(frozen=True)
class TinyCheckpoint:
    checkpoint: Path  # the .safetensors
    yaml: Path  # beside it, same stem (A1111 picks it up)
    text_encoder_dir: Path  # tokenizer files + CLIP-L config, named by the yaml


def _norm(shapes: dict, key: str, c: int) -> None:
    shapes[f"{key}.weight"], shapes[f"{key}.bias"] = (c,), (c,)


def _linear(shapes: dict, key: str, out: int, inp: int, bias: bool = True) -> None:
    shapes[f"{key}.weight"] = (out, inp)
    if bias:
        shapes[f"{key}.bias"] = (out,)


def _conv(shapes: dict, key: str, out: int, inp: int, k: int) -> None:
    shapes[f"{key}.weight"], shapes[f"{key}.bias"] = (out, inp, k, k), (out,)


def _resblock(shapes: dict, key: str, cin: int, cout: int, emb: int) -> None:
    _norm(shapes, f"{key}.in_layers.0", cin)
    _conv(shapes, f"{key}.in_layers.2", cout, cin, 3)
    _linear(shapes, f"{key}.emb_layers.1", cout, emb)
    _norm(shapes, f"{key}.out_layers.0", cout)
    _conv(shapes, f"{key}.out_layers.3", cout, cout, 3)
    if cin != cout:
        _conv(shapes, f"{key}.skip_connection", cout, cin, 1)


def _transformer(shapes: dict, key: str, c: int) -> None:
    _norm(shapes, f"{key}.norm", c)
    _conv(shapes, f"{key}.proj_in", c, c, 1)
    block = f"{key}.transformer_blocks.0"
    for attn, kv_width in (("attn1", c), ("attn2", CONTEXT)):
        _linear(shapes, f"{block}.{attn}.to_q", c, c, bias=False)
        _linear(shapes, f"{block}.{attn}.to_k", c, kv_width, bias=False)
        _linear(shapes, f"{block}.{attn}.to_v", c, kv_width, bias=False)
        _linear(shapes, f"{block}.{attn}.to_out.0", c, c)
    _linear(shapes, f"{block}.ff.net.0.proj", 8 * c, c)  # GEGLU: two halves of 4c
    _linear(shapes, f"{block}.ff.net.2", c, 4 * c)
    for n in (1, 2, 3):
        _norm(shapes, f"{block}.norm{n}", c)
    _conv(shapes, f"{key}.proj_out", c, c, 1)


def unet_shapes(prefix: str = "model.diffusion_model.") -> dict[str, tuple[int, ...]]:
    """The ldm UNetModel's parameter shapes (openaimodel.py, SD1.5 settings, this module's widths)."""
    s: dict[str, tuple[int, ...]] = {}
    c, emb = MODEL_CHANNELS, 4 * MODEL_CHANNELS
    _linear(s, "time_embed.0", emb, c)
    _linear(s, "time_embed.2", emb, emb)
    _conv(s, "input_blocks.0.0", c, 4, 3)
    skips, ch, n = [c], c, 1
    for level, mult in enumerate(CHANNEL_MULT):
        for _ in range(2):
            _resblock(s, f"input_blocks.{n}.0", ch, mult * c, emb)
            ch = mult * c
            if level < ATTENTION_LEVELS:
                _transformer(s, f"input_blocks.{n}.1", ch)
            skips.append(ch)
            n += 1
        if level != len(CHANNEL_MULT) - 1:
            _conv(s, f"input_blocks.{n}.0.op", ch, ch, 3)
            skips.append(ch)
            n += 1
    _resblock(s, "middle_block.0", ch, ch, emb)
    _transformer(s, "middle_block.1", ch)
    _resblock(s, "middle_block.2", ch, ch, emb)
    n = 0
    for level, mult in reversed(list(enumerate(CHANNEL_MULT))):
        for i in range(3):
            _resblock(s, f"output_blocks.{n}.0", ch + skips.pop(), mult * c, emb)
            ch, part = mult * c, 1
            if level < ATTENTION_LEVELS:
                _transformer(s, f"output_blocks.{n}.1", ch)
                part = 2
            if level > 0 and i == 2:
                _conv(s, f"output_blocks.{n}.{part}.conv", ch, ch, 3)
            n += 1
    _norm(s, "out.0", ch)
    _conv(s, "out.2", 4, c, 3)
    return {prefix + k: v for k, v in s.items()}


def _vae_block(s: dict, key: str, cin: int, cout: int) -> None:
    _norm(s, f"{key}.norm1", cin)
    _conv(s, f"{key}.conv1", cout, cin, 3)
    _norm(s, f"{key}.norm2", cout)
    _conv(s, f"{key}.conv2", cout, cout, 3)
    if cin != cout:
        _conv(s, f"{key}.nin_shortcut", cout, cin, 1)


def _vae_mid(s: dict, key: str, ch: int) -> None:
    _vae_block(s, f"{key}.block_1", ch, ch)
    _norm(s, f"{key}.attn_1.norm", ch)
    for part in ("q", "k", "v", "proj_out"):
        _conv(s, f"{key}.attn_1.{part}", ch, ch, 1)
    _vae_block(s, f"{key}.block_2", ch, ch)


def vae_shapes(prefix: str = "first_stage_model.") -> dict[str, tuple[int, ...]]:
    """The ldm AutoencoderKL's parameter shapes (SD's VAE: ch 128, mult 1,2,4,4, two blocks a level, z 4)."""
    s: dict[str, tuple[int, ...]] = {}
    _conv(s, "encoder.conv_in", VAE_CH, 3, 3)
    ch = VAE_CH
    for i, mult in enumerate(VAE_MULT):
        for j in range(2):
            _vae_block(s, f"encoder.down.{i}.block.{j}", ch, VAE_CH * mult)
            ch = VAE_CH * mult
        if i != len(VAE_MULT) - 1:
            _conv(s, f"encoder.down.{i}.downsample.conv", ch, ch, 3)
    _vae_mid(s, "encoder.mid", ch)
    _norm(s, "encoder.norm_out", ch)
    _conv(s, "encoder.conv_out", 8, ch, 3)
    _conv(s, "quant_conv", 8, 8, 1)
    _conv(s, "post_quant_conv", 4, 4, 1)
    _conv(s, "decoder.conv_in", ch, 4, 3)
    _vae_mid(s, "decoder.mid", ch)
    for i in reversed(range(len(VAE_MULT))):
        for j in range(3):
            _vae_block(s, f"decoder.up.{i}.block.{j}", ch, VAE_CH * VAE_MULT[i])
            ch = VAE_CH * VAE_MULT[i]
        if i != 0:
            _conv(s, f"decoder.up.{i}.upsample.conv", ch, ch, 3)
    _norm(s, "decoder.norm_out", ch)
    _conv(s, "decoder.conv_out", 3, ch, 3)
    return {prefix + k: v for k, v in s.items()}


def text_encoder_shapes(prefix: str = "cond_stage_model.transformer.") -> dict[str, tuple[int, ...]]:
    """transformers' CLIPTextModel parameter shapes for CLIP-L (built on the meta device, so nothing is allocated),
    under ``text_model.`` as checkpoints hold them (transformers 5 leaves that level out of its own names)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        model = CLIPTextModel(CLIPTextConfig(**CLIP_L))
    return {prefix + (k if k.startswith("text_model.") else f"text_model.{k}"): tuple(p.shape)
            for k, p in model.state_dict().items() if not k.endswith("position_ids")}


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int, dtype=torch.float16) -> dict[str, torch.Tensor]:
    """Seeded values: weights N(0, 1/fan_in) (embeddings N(0, 0.02²)), norm weights 1, biases 0."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(shapes):
        shape = shapes[key]
        if key.endswith(".bias"):
            t = torch.zeros(shape)
        elif len(shape) == 1:  # GroupNorm/LayerNorm weight
            t = torch.ones(shape)
        elif "embedding" in key:
            t = torch.randn(shape, generator=gen) * 0.02
        else:
            t = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
        out[key] = t.to(dtype).contiguous()
    return out


def checkpoint_state(seed: int = 0) -> dict[str, torch.Tensor]:
    sd = random_weights({**unet_shapes(), **vae_shapes(), **text_encoder_shapes()}, seed)
    sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    return sd


def write_clip_tokenizer(folder: Path) -> None:
    """A character-level CLIP BPE tokenizer (no merges) and CLIP-L's config, loadable by any transformers."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in CHARS:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps({**special, "model_max_length": 77,
                                                              "tokenizer_class": "CLIPTokenizer"}))
    (folder / "config.json").write_text(json.dumps({**CLIP_L, "architectures": ["CLIPTextModel"],
                                                    "model_type": "clip_text_model", "bos_token_id": 0,
                                                    "eos_token_id": 1, "pad_token_id": 1}))


def a1111_yaml(text_encoder_dir: Path) -> str:
    """A1111's v1-inference.yaml with this module's UNet widths and a local text encoder folder."""
    return f"""model:
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    linear_start: 0.00085
    linear_end: 0.0120
    num_timesteps_cond: 1
    log_every_t: 200
    timesteps: 1000
    first_stage_key: "jpg"
    cond_stage_key: "txt"
    image_size: 64
    channels: 4
    cond_stage_trainable: false
    conditioning_key: crossattn
    monitor: val/loss_simple_ema
    scale_factor: 0.18215
    use_ema: False
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        image_size: 32
        in_channels: 4
        out_channels: 4
        model_channels: {MODEL_CHANNELS}
        attention_resolutions: [4, 2, 1]
        num_res_blocks: 2
        channel_mult: {list(CHANNEL_MULT)}
        num_heads: 8
        use_spatial_transformer: True
        transformer_depth: 1
        context_dim: {CONTEXT}
        use_checkpoint: False
        legacy: False
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: 4
        monitor: val/rec_loss
        ddconfig:
          double_z: true
          z_channels: 4
          resolution: 256
          in_channels: 3
          out_ch: 3
          ch: {VAE_CH}
          ch_mult: {list(VAE_MULT)}
          num_res_blocks: 2
          attn_resolutions: []
          dropout: 0.0
        lossconfig:
          target: torch.nn.Identity
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
      params:
        version: {json.dumps(str(text_encoder_dir))}
"""


def write_tiny_checkpoint(folder: Path, name: str = "tiny-sd15", seed: int = 0) -> TinyCheckpoint:
    """``folder/name.safetensors`` + ``folder/name.yaml`` + ``folder/name-text-encoder/``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    te_dir = folder / f"{name}-text-encoder"
    write_clip_tokenizer(te_dir)
    ckpt = folder / f"{name}.safetensors"
    save_file(checkpoint_state(seed), str(ckpt), metadata={"format": "pt"})
    yaml = folder / f"{name}.yaml"
    yaml.write_text(a1111_yaml(te_dir))
    return TinyCheckpoint(checkpoint=ckpt, yaml=yaml, text_encoder_dir=te_dir)


def write_lora(path: Path, *, seed: int = 0, rank: int = 4, alpha: float = 2.0) -> Path:
    """A kohya-named LoRA for this checkpoint (UNet attention/projections and the first two text-encoder layers),
    written by peft on diffusers'/transformers' own modules of these widths (tests/comfy_host.py's writer)."""
    from comfy_host import write_tiny_sd15_lora
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=tuple(MODEL_CHANNELS * m for m in CHANNEL_MULT), cross_attention_dim=CONTEXT,
        attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * ATTENTION_LEVELS + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * ATTENTION_LEVELS)
    text_encoder = CLIPTextModel(CLIPTextConfig(**{**CLIP_L, "num_hidden_layers": 2}))
    return write_tiny_sd15_lora(path, rank=rank, alpha=alpha, seed=seed, unet=unet, text_encoder=text_encoder)
