"""The family registry: one record per base-model family, and the only place a family's facts are listed.

A :class:`Family` holds the family's code and title, the three-letter code its stable IDs start with, its
architecture (the layout registry builds the family's blocks from it and key naming converts diffusers names by it),
its layouts, the ComfyUI text encoder each text-encoder component targets, its built-in preset set and the ComfyUI
model config classes it loads as. Detection (:mod:`.family_detect`), :mod:`.layouts`, :mod:`.key_targets`, stable IDs
(:mod:`.library.stable_ids`), the presets (:mod:`.profiles.presets`) and the nodes read these records: adding a family is one
record here, plus a builder in :mod:`.layouts` when its architecture is a new kind.

>>> FAMILIES["sdxl"].id_code, FAMILIES["sdxl"].layouts, FAMILIES["sdxl"].views
('SDX', ('sdxl_unet_20',), ('sdxl_unet_12',))
>>> family_of_comfy_class("FluxSchnell")
'flux'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

UNKNOWN = "unknown"  # what detection answers when no family fits
UNKNOWN_ID_CODE = "UNK"


@dataclass(frozen=True)
class SdUnet:
    """A Stable Diffusion UNet in ldm names: BASE (text encoder), IN00…, M00, OUT00….

    The blocks that hold attention form four LBW groups (shallow and deep input, deep and shallow output blocks, by
    index); together they are the LBW view (17 / 12 blocks), and they define the LBW preset set.
    """

    inputs: int
    outputs: int
    shallow_in: tuple[int, ...]
    deep_in: tuple[int, ...]
    deep_out: tuple[int, ...]
    shallow_out: tuple[int, ...]

    @property
    def attention_in(self) -> tuple[int, ...]:
        return tuple(sorted(self.shallow_in + self.deep_in))

    @property
    def attention_out(self) -> tuple[int, ...]:
        return tuple(sorted(self.deep_out + self.shallow_out))

    @property
    def up_attention_levels(self) -> frozenset[int]:
        """Levels of the diffusers UNet whose up block has attention (3 output blocks per level): they decide where
        the upsampler sits in ``output_blocks``."""
        return frozenset(i // 3 for i in self.attention_out)


@dataclass(frozen=True)
class DoubleSingleDiT:
    """A Flux-style DiT: text-encoder blocks (if any), IN, D00… double-stream, S00… single-stream blocks, OUT."""

    double: int
    single: int
    text_blocks: tuple[tuple[str, str, str], ...] = ()  # (block id, label, ComfyUI encoder) per encoder with a block
    embedders: str = "Input embedders"  # the label of IN


@dataclass(frozen=True)
class MMDiT:
    """SD3's MMDiT: CLIP, T5, IN, J00… joint blocks, OUT; one layout per model size (depth, title)."""

    sizes: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class WanDiT:
    """WAN's DiT: IN, B00… blocks, OUT; one layout per depth."""

    depths: tuple[int, ...]


Architecture = SdUnet | DoubleSingleDiT | MMDiT | WanDiT
PRESET_SETS = ("lbw", "flux", "thirds")  # see lorawb_core.profiles.presets


@dataclass(frozen=True)
class Family:
    code: str  # lorawb's family code, e.g. "sdxl"
    title: str  # shown to people, e.g. "SDXL"
    id_code: str  # the first part of a stable ID, e.g. "SDX" in SDX-CHR-001
    architecture: Architecture
    layouts: tuple[str, ...]  # the full layouts, one per model size
    views: tuple[str, ...] = ()  # LBW-compact views of a full layout (the attention blocks)
    text_encoders: Mapping[str, str] = field(default_factory=dict, hash=False)  # te/te1/te2/te3 → ComfyUI encoder
    presets: str = "thirds"  # the built-in preset set (PRESET_SETS)
    comfy_classes: tuple[str, ...] = ()  # ComfyUI model config classes (comfy.supported_models) of this family
    template: str = ""  # the built-in preview/XY workflow template (lorawb_core.batch.templates); "" = none
    media: str = "image"  # what the family's models generate: image | video

    @property
    def backbone(self) -> str:
        """``unet`` or ``dit``."""
        return "unet" if isinstance(self.architecture, SdUnet) else "dit"


_SD1_UNET = SdUnet(12, 12, shallow_in=(1, 2, 4), deep_in=(5, 7, 8), deep_out=(3, 4, 5, 6), shallow_out=(7, 8, 9, 10, 11))
_REGISTRY = (
    Family("sd15", "SD 1.x", "SD1", _SD1_UNET, ("sd15_unet_26",), ("sd15_unet_17",),
           {"te": "clip_l", "te1": "clip_l"}, "lbw", ("SD15", "SD15_instructpix2pix"), template="sd"),
    Family("sd2", "SD 2.x", "SD2", _SD1_UNET, ("sd2_unet_26",), ("sd2_unet_17",),
           {"te": "clip_h", "te1": "clip_h"}, "lbw", ("SD20", "SD21UnclipL", "SD21UnclipH"), template="sd"),
    Family("sdxl", "SDXL", "SDX", SdUnet(9, 9, shallow_in=(4, 5), deep_in=(7, 8), deep_out=(0, 1, 2),
                                          shallow_out=(3, 4, 5)),
           ("sdxl_unet_20",), ("sdxl_unet_12",), {"te": "clip_l", "te1": "clip_l", "te2": "clip_g"}, "lbw",
           ("SDXL", "SDXL_instructpix2pix"), template="sd"),
    Family("sdxl_refiner", "SDXL refiner", "SDR", SdUnet(12, 12, shallow_in=(4, 5), deep_in=(7, 8),
                                                         deep_out=(3, 4, 5), shallow_out=(6, 7, 8)),
           ("sdxl_refiner_unet_26",), ("sdxl_refiner_unet_12",), {"te": "clip_g", "te1": "clip_g", "te2": "clip_g"},
           "lbw", ("SDXLRefiner",), template="sd"),
    Family("sd3", "SD3 / SD3.5", "SD3", MMDiT(((24, "SD3/3.5 Medium"), (38, "SD3.5 Large"))),
           ("sd3_mmdit_28", "sd3_mmdit_42"), (), {"te": "clip_l", "te1": "clip_l", "te2": "clip_g", "te3": "t5xxl"},
           "thirds", ("SD3",), template="sd3"),
    Family("flux", "Flux.1", "FLX", DoubleSingleDiT(19, 38, (("CLIP", "CLIP-L", "clip_l"), ("T5", "T5-XXL", "t5xxl"))),
           ("flux_dit_61",), (), {"te": "clip_l", "te1": "clip_l", "te2": "t5xxl", "te3": "t5xxl"}, "flux",
           ("Flux", "FluxSchnell", "FluxInpaint"), template="flux"),
    Family("wan", "WAN 2.x", "WAN", WanDiT((30, 40)), ("wan_dit_32", "wan_dit_42"), (), {}, "thirds",
           ("WAN21_T2V", "WAN21_I2V", "WAN21_FunControl2V", "WAN21_Vace", "WAN21_Camera", "WAN22_T2V", "WAN22_S2V",
            "WAN22_Animate", "WAN21_FlowRVS"), media="video"),
    Family("hunyuan_video", "HunyuanVideo", "HYV", DoubleSingleDiT(20, 40, embedders="Input embedders + token refiner"),
           ("hunyuan_video_dit_62",), (), {"te": "clip_l", "te1": "clip_l", "te2": "llama"}, "thirds",
           ("HunyuanVideo", "HunyuanVideoI2V", "HunyuanVideoSkyreelsI2V"), media="video"),
)
FAMILIES: dict[str, Family] = {f.code: f for f in _REGISTRY}
COMFY_CLASSES: dict[str, str] = {cls: f.code for f in _REGISTRY for cls in f.comfy_classes}


def title_of(code: str | None) -> str:
    """The family's title; an unregistered code (``unknown``) is its own title."""
    fam = FAMILIES.get(code or UNKNOWN)
    return fam.title if fam else (code or UNKNOWN)


def id_code_of(code: str | None) -> str:
    """The stable-ID code of a family (``UNK`` for an unknown or unregistered one)."""
    fam = FAMILIES.get(code or UNKNOWN)
    return fam.id_code if fam else UNKNOWN_ID_CODE


def family_of_comfy_class(class_name: str) -> str | None:
    """The family of a ComfyUI model config class name, or None when the class is not a registered one."""
    return COMFY_CLASSES.get(class_name)
