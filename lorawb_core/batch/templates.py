"""ComfyUI API-format workflows for one generation: built-in templates per family, and user templates.

A built-in template is chosen by the family's ``template`` field (:mod:`lorawb_core.families`): ``sd`` (SD 1.x, SD2,
SDXL: ``CheckpointLoaderSimple`` → our loaders → two ``CLIPTextEncode`` → ``EmptyLatentImage`` → ``KSampler`` →
``VAEDecode`` → ``SaveImage``), ``sd3`` (the same with ``EmptySD3LatentImage``) and ``flux`` (a checkpoint, or
``UNETLoader`` + ``DualCLIPLoader`` + ``VAELoader``; ``FluxGuidance`` on the positive prompt, cfg 1).

Each LoRA of the stack becomes one of our nodes: *Load LoRA by stable_id* (``LoraWB_LoadLoraById``), or *Block Weight
Apply* (``LoraWB_BlockWeightApply``) when it has block weights (any text the node takes: a preset name, an LBW
vector, ``BLOCK=value`` pairs).

A user template is any API-format workflow exported from ComfyUI ("Export (API)") holding at least one of our loader
nodes. Rendering it sets, on copies of its nodes: the LoRA id, strengths and weights on our loaders (in node-id
order), the seed on every sampler (``seed``/``noise_seed``), the prompt and negative on the text encoders feeding the
sampler's ``positive``/``negative`` (or on nodes whose title holds ``[prompt]`` / ``[negative]``), and the checkpoint
on its only ``CheckpointLoaderSimple`` when one is set. Titles may also mark ``[seed]``, ``[lora]`` and ``[output]``.

>>> built = template_for("sd15").render(PreviewSettings(checkpoint="tiny.safetensors"), [LoraUse("SD1-CHR-001")],
...                                     "a cat", "blurry")
>>> [built.workflow[n]["class_type"] for n in sorted(built.workflow, key=int)][:3]
['CheckpointLoaderSimple', 'LoraWB_LoadLoraById', 'CLIPTextEncode']
>>> built.output_node, built.group
('8', 'tiny.safetensors')
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import TemplateError
from ..families import FAMILIES, title_of
from .settings import PreviewSettings

LOAD_BY_ID = "LoraWB_LoadLoraById"
BLOCK_WEIGHT_APPLY = "LoraWB_BlockWeightApply"
LOADER_CLASSES = (LOAD_BY_ID, BLOCK_WEIGHT_APPLY)
SAMPLER_SEED_INPUTS = ("seed", "noise_seed")
MARKERS = ("[prompt]", "[negative]", "[seed]", "[lora]", "[output]")
SAVE_PREFIX = "lorawb/batch"


@dataclass(frozen=True)
class LoraUse:
    """One LoRA of a stack as a workflow applies it."""

    stable_id: str
    strength_model: float = 1.0
    strength_clip: float | None = None  # None: same as strength_model
    weights: str | None = None  # block weights as Block Weight Apply takes them; None: Load LoRA by stable_id

    @property
    def clip_strength(self) -> float:
        return self.strength_model if self.strength_clip is None else self.strength_clip


@dataclass(frozen=True)
class BuiltWorkflow:
    """A rendered prompt: the API-format graph, the id of its image output node and the models it loads."""

    workflow: dict[str, Any]
    output_node: str
    group: str


class Template(Protocol):
    name: str

    def render(self, settings: PreviewSettings, loras: list[LoraUse], prompt: str, negative: str) -> BuiltWorkflow:
        ...


class _Graph:
    """Nodes added in order get ids "1", "2", …; ``add`` returns the id."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}

    def add(self, class_type: str, title: str | None = None, **inputs: Any) -> str:
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs, "_meta": {"title": title or class_type}}
        return node_id


def loader_inputs(use: LoraUse) -> tuple[str, dict[str, Any]]:
    """The class and the non-link inputs of the loader node that applies ``use``."""
    inputs: dict[str, Any] = {"lora": use.stable_id, "strength_model": float(use.strength_model),
                              "strength_clip": float(use.clip_strength)}
    if use.weights is None:
        return LOAD_BY_ID, inputs
    return BLOCK_WEIGHT_APPLY, {**inputs, "weights_text": use.weights}


def models_group(settings: PreviewSettings) -> str:
    """What a server must load for these settings: the checkpoint, or unet + clips + vae."""
    if settings.checkpoint:
        return settings.checkpoint
    return "|".join([settings.unet, *settings.clip, settings.vae])


@dataclass(frozen=True)
class BuiltinTemplate:
    """The built-in graph of one template kind (``sd``, ``sd3``, ``flux``)."""

    name: str

    def render(self, settings: PreviewSettings, loras: list[LoraUse], prompt: str, negative: str) -> BuiltWorkflow:
        g = _Graph()
        if settings.checkpoint or self.name != "flux":
            if not settings.checkpoint:
                raise TemplateError(f"No checkpoint is set for the {self.name} template; set \"checkpoint\" in "
                                    "preview_config.json or pass --checkpoint NAME (as the server lists it).")
            ckpt = g.add("CheckpointLoaderSimple", "Checkpoint", ckpt_name=settings.checkpoint)
            model, clip, vae = [ckpt, 0], [ckpt, 1], [ckpt, 2]
        else:
            if not (settings.unet and len(settings.clip) == 2 and settings.vae):
                raise TemplateError("The Flux template needs a checkpoint, or a unet, two clip names (clip_l and "
                                    "t5xxl) and a vae: set them in preview_config.json or pass --checkpoint NAME.")
            unet = g.add("UNETLoader", "Diffusion model", unet_name=settings.unet, weight_dtype=settings.weight_dtype)
            clips = g.add("DualCLIPLoader", "Text encoders", clip_name1=settings.clip[0], clip_name2=settings.clip[1],
                          type="flux")
            vae_node = g.add("VAELoader", "VAE", vae_name=settings.vae)
            model, clip, vae = [unet, 0], [clips, 0], [vae_node, 0]
        for use in loras:
            class_type, inputs = loader_inputs(use)
            node = g.add(class_type, f"{use.stable_id} [lora]", model=model, clip=clip, **inputs)
            model, clip = [node, 0], [node, 1]
        positive = g.add("CLIPTextEncode", "Prompt [prompt]", text=prompt, clip=clip)
        negative_node = g.add("CLIPTextEncode", "Negative [negative]", text=negative, clip=clip)
        pos_link = [positive, 0]
        if self.name == "flux":
            pos_link = [g.add("FluxGuidance", "Guidance", conditioning=pos_link, guidance=float(settings.guidance)), 0]
        latent_class = "EmptyLatentImage" if self.name == "sd" else "EmptySD3LatentImage"
        latent = g.add(latent_class, "Size", width=int(settings.width), height=int(settings.height), batch_size=1)
        sampler = g.add("KSampler", "Sampler [seed]", model=model, seed=int(settings.seed), steps=int(settings.steps),
                        cfg=float(settings.cfg), sampler_name=settings.sampler, scheduler=settings.scheduler,
                        positive=pos_link, negative=[negative_node, 0], latent_image=[latent, 0], denoise=1.0)
        decoded = g.add("VAEDecode", "Decode", samples=[sampler, 0], vae=vae)
        save = g.add("SaveImage", "Save [output]", images=[decoded, 0], filename_prefix=SAVE_PREFIX)
        return BuiltWorkflow(g.nodes, save, models_group(settings))


def _title(node: dict[str, Any]) -> str:
    return str((node.get("_meta") or {}).get("title") or "").lower()


def _by_id(workflow: dict[str, Any]) -> list[str]:
    return sorted(workflow, key=lambda n: (0, int(n)) if str(n).isdigit() else (1, str(n)))


class UserTemplate:
    """An API-format workflow with at least one of our loader nodes (checked when it is made)."""

    def __init__(self, workflow: dict[str, Any], name: str = "user template") -> None:
        self.name = name
        if not isinstance(workflow, dict) or not workflow:
            raise TemplateError(f"{name}: a template must be a ComfyUI API-format workflow (a JSON object of nodes).")
        if "nodes" in workflow and "links" in workflow:
            raise TemplateError(f"{name} is a UI workflow; export it from ComfyUI with \"Export (API)\" and use that "
                                "file as the template.")
        bad = [n for n, node in workflow.items() if not isinstance(node, dict) or "class_type" not in node]
        if bad:
            raise TemplateError(f"{name}: node(s) {', '.join(map(str, bad[:5]))} have no class_type; this is not an "
                                "API-format workflow (use \"Export (API)\" in ComfyUI).")
        self.workflow = workflow
        order = _by_id(workflow)
        self.loaders = [n for n in order if workflow[n]["class_type"] in LOADER_CLASSES]
        if not self.loaders:
            raise TemplateError(f"{name} has no lorawb loader node: add a \"Load LoRA by stable_id\" or \"Block Weight "
                                "Apply\" node where the LoRA goes, then export it again with \"Export (API)\".")
        marked = [n for n in order if "[output]" in _title(workflow[n])]
        saves = [n for n in order if workflow[n]["class_type"] == "SaveImage"]
        if not (marked or saves):
            raise TemplateError(f"{name} has no SaveImage node (or a node titled \"[output]\"): the batch would get no "
                                "image back; add one.")
        self.output_node = (marked or saves)[0]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> UserTemplate:
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as exc:
            raise TemplateError(f"{path}: cannot read the template ({exc}).") from None
        return cls(data, name=os.path.basename(os.fspath(path)))

    def _text_nodes(self, wf: dict[str, Any], marker: str, sampler_input: str) -> list[str]:
        marked = [n for n in _by_id(wf) if marker in _title(wf[n])]
        if marked:
            return marked
        found: list[str] = []
        for node in wf.values():
            link = node.get("inputs", {}).get(sampler_input)
            seen: set[str] = set()
            while isinstance(link, list) and link and str(link[0]) in wf and str(link[0]) not in seen:
                src = str(link[0])
                seen.add(src)
                if isinstance(wf[src]["inputs"].get("text"), str):
                    found.append(src)
                    break
                link = wf[src]["inputs"].get("conditioning")  # FluxGuidance, ConditioningSetArea … pass it through
        return list(dict.fromkeys(found))

    def render(self, settings: PreviewSettings, loras: list[LoraUse], prompt: str, negative: str) -> BuiltWorkflow:
        if not loras:
            raise TemplateError(f"{self.name}: a user template needs a LoRA for its loader node(s).")
        if len(loras) > len(self.loaders):
            raise TemplateError(f"{self.name} has {len(self.loaders)} lorawb loader node(s) but the stack has "
                                f"{len(loras)} LoRAs; add loader nodes to the template or use fewer LoRAs.")
        wf = copy.deepcopy(self.workflow)
        uses = loras + [LoraUse(loras[0].stable_id, 0.0, 0.0)] * (len(self.loaders) - len(loras))
        for node_id, use in zip(self.loaders, uses, strict=True):
            class_type, inputs = loader_inputs(use)
            if class_type == LOAD_BY_ID and wf[node_id]["class_type"] == BLOCK_WEIGHT_APPLY:
                inputs = {**inputs, "weights_text": ""}  # every block at 1
                class_type = BLOCK_WEIGHT_APPLY
            wf[node_id]["class_type"] = class_type
            wf[node_id]["inputs"].update(inputs)
        for node_id in _by_id(wf):
            node_inputs = wf[node_id]["inputs"]
            for key in SAMPLER_SEED_INPUTS:
                if key in node_inputs and not isinstance(node_inputs[key], list):
                    node_inputs[key] = int(settings.seed)
        for marker, sampler_input, text in (("[prompt]", "positive", prompt), ("[negative]", "negative", negative)):
            for node_id in self._text_nodes(wf, marker, sampler_input):
                wf[node_id]["inputs"]["text"] = text
        checkpoints = [n for n in wf if wf[n]["class_type"] == "CheckpointLoaderSimple"]
        if settings.checkpoint and len(checkpoints) == 1:
            wf[checkpoints[0]]["inputs"]["ckpt_name"] = settings.checkpoint
        group = "|".join(str(wf[n]["inputs"].get(k)) for n in _by_id(wf) for k in
                         ("ckpt_name", "unet_name", "clip_name1", "clip_name2", "clip_name", "vae_name")
                         if isinstance(wf[n]["inputs"].get(k), str))
        return BuiltWorkflow(wf, self.output_node, group)


BUILTIN = {name: BuiltinTemplate(name) for name in ("sd", "sd3", "flux")}


def template_for(family: str | None, user_template: UserTemplate | None = None) -> Template:
    """The template for a LoRA of ``family``: the user's if given, else the family's built-in one.

    Raises:
        TemplateError: the family has no built-in template (the message says why: a video family, or unknown).
    """
    if user_template is not None:
        return user_template
    fam = FAMILIES.get(family or "")
    if fam is None:
        raise TemplateError(f"The LoRA's base model family is {family or 'unknown'}: lorawb has no workflow template "
                            "for it; pass a user template (--template FILE, an API-format workflow with our loader).")
    if not fam.template:
        why = ("it is a video model family and lorawb's templates make still images" if fam.media == "video"
               else "no built-in template is defined for it")
        raise TemplateError(f"{title_of(fam.code)} LoRAs have no built-in workflow template ({why}); pass a user "
                            "template (--template FILE, an API-format workflow with our loader node).")
    return BUILTIN[fam.template]
