"""A tiny SD1.5 checkpoint that a real ComfyUI server loads with ``CheckpointLoaderSimple``.

ComfyUI finds a checkpoint's model class by matching the UNet configuration it reads off the weights against its
list of supported models (``comfy.supported_models.models``); an SD1.5 UNet at 1/10 width matches none of them. This
file is used two ways, both inside a real ComfyUI:

* as a custom node: :func:`tests.comfy_server.start_comfyui` copies it into the server's ``custom_nodes`` as
  ``lorawb_tiny_models/__init__.py``; at import it registers :class:`TinySD15` (ComfyUI's own ``SD15`` class with the
  tiny UNet and a tiny CLIP text encoder) with that list, the way model packs extend ComfyUI. Nothing of ComfyUI is
  replaced: detection, loading, sampling, the VAE and ``SaveImage`` are ComfyUI's own.
* as a script run inside a ComfyUI directory (``python comfy_tiny_models.py OUT.safetensors``): it builds the tiny
  model through ComfyUI's classes with seeded random weights and writes it as a standard SD1.5 checkpoint
  (``model.diffusion_model.*``, ``cond_stage_model.*``, ``first_stage_model.*``). The VAE is a full-size SD VAE
  (ComfyUI builds SD VAEs at one fixed size) stored in float16.
"""

from __future__ import annotations

import json
import os
import sys

# the SD1.5 UNet as ComfyUI's model detection reads it, at 1/10 width (kept equal to tests/comfy_host.TINY_SD15,
# which comfy_host imports from here)
TINY_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "model_channels": 32, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 64, "num_heads": 8,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "use_temporal_attention": False,
    "use_temporal_resblock": False,
}
TINY_CLIP = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": 2}
NODE_CLASS_MAPPINGS: dict = {}  # a custom node package that adds no node, only the model class


def _clip_config_path() -> str:
    """The tiny CLIP's transformers config (ComfyUI's SD1 CLIP config with the tiny sizes), written once beside us."""
    import comfy.sd1_clip

    base = os.path.join(os.path.dirname(comfy.sd1_clip.__file__), "sd1_clip_config.json")
    with open(base, encoding="utf-8") as fh:
        config = {**json.load(fh), **TINY_CLIP}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_clip_config.json")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(config, fh)
        os.replace(tmp, path)
    return path


def register():
    """Add the tiny SD1.5 class to ComfyUI's model detection (once); returns the class."""
    import comfy.sd1_clip
    import comfy.supported_models as supported
    import comfy.supported_models_base as supported_base

    for known in supported.models:
        if known.__name__ == "TinySD15":
            return known
    clip_config = _clip_config_path()

    class TinySD15(supported.SD15):
        unet_config = {"context_dim": TINY_UNET["context_dim"], "model_channels": TINY_UNET["model_channels"],
                       "use_linear_in_transformer": False, "adm_in_channels": None, "use_temporal_attention": False}

        def clip_target(self, *args, **kwargs):
            target = supported_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
            target.params = {"textmodel_json_config": clip_config, "clip_model": comfy.sd1_clip.SDClipModel}
            return target

    supported.models.insert(0, TinySD15)
    return TinySD15


def _randomize(module, seed: int, scale: float | None = 0.05) -> None:
    """Seeded random weights (ComfyUI builds layers without initialising them). ``scale=None``: a trained-like
    start — matrices and kernels at 1/sqrt(fan-in), norm weights 1, biases 0 — so a deep VAE stays finite."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if scale is not None:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
            elif p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) / max(1, p[0].numel()) ** 0.5)
            else:
                p.fill_(1.0 if name.endswith("weight") else 0.0)


def write_checkpoint(out: str) -> None:
    """Build the tiny model with seeded random weights through ComfyUI's classes and save it as a checkpoint."""
    import comfy.sd
    import torch
    from safetensors.torch import save_file

    tiny = register()
    torch.manual_seed(0)
    model = tiny(dict(TINY_UNET, dtype=torch.float32)).get_model({}, device=torch.device("cpu"))
    _randomize(model, 0)
    clip = comfy.sd.CLIP(tiny(dict(TINY_UNET)).clip_target())
    _randomize(clip.cond_stage_model, 1)
    # ComfyUI builds its default SD VAE (one fixed size) from the keys it recognises; weights are set just below
    vae = comfy.sd.VAE(sd={"decoder.conv_in.weight": torch.randn(512, 4, 3, 3) * 0.02,
                           "encoder.down.2.downsample.conv.weight": torch.randn(512, 512, 3, 3) * 0.02,
                           "quant_conv.weight": torch.randn(8, 8, 1, 1) * 0.2,
                           "post_quant_conv.weight": torch.randn(4, 4, 1, 1) * 0.2})
    _randomize(vae.first_stage_model, 2, scale=None)
    vae_sd = {k: v.to(torch.float16) for k, v in vae.get_sd().items()}
    sd = model.state_dict_for_saving(clip.get_sd(), vae_sd, None)
    sd = {k: v.detach().contiguous() for k, v in sd.items()}
    tmp = f"{out}.{os.getpid()}.tmp"
    save_file(sd, tmp, metadata={"lorawb_test": "tiny SD1.5 checkpoint"})
    os.replace(tmp, out)


if __name__ == "__main__" and len(sys.argv) == 2 and sys.argv[1].endswith(".safetensors"):
    sys.path.insert(0, os.getcwd())  # run with cwd = the ComfyUI directory
    if os.path.isfile(os.path.join(os.getcwd(), "utils", "__init__.py")):
        import utils  # noqa: F401 - current ComfyUI: its utils package comes before comfy's on the path
    from comfy.cli_args import args

    args.cpu = True
    import torch

    with torch.no_grad():
        write_checkpoint(sys.argv[1])
elif __name__ != "__main__":
    try:
        import comfy.supported_models  # noqa: F401 - inside a ComfyUI process: register the tiny model class
    except ImportError:  # imported by the tests themselves (for the constants)
        pass
    else:
        register()
