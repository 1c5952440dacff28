"""Base-model family detection with evidence: shapes first, then metadata; never a silent guess.

The answer is a family code of the registry (:mod:`.families`) or ``unknown`` with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .families import UNKNOWN, title_of
from .key_targets import RawPath


@dataclass(frozen=True)
class ModuleShape:
    raw: RawPath
    out_features: int
    in_features: int


@dataclass
class FamilyGuess:
    family: str
    variant: str | None = None
    confidence: str = "none"  # high | medium | low | none
    evidence: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    reason: str | None = None  # why it is unknown
    depth: int | None = None  # SD3 joint blocks / WAN blocks

    def to_dict(self) -> dict:
        return {"family": self.family, "title": title_of(self.family), "variant": self.variant,
                "confidence": self.confidence, "evidence": self.evidence, "conflicts": self.conflicts,
                "reason": self.reason, "depth": self.depth}


def _idx(pattern: str, paths: Sequence[str]) -> list[int]:
    rx = re.compile(pattern)
    return [int(m[1]) for p in paths if (m := rx.match(p))]


def _width(mods: Sequence[ModuleShape], pattern: str, side: str = "in") -> int | None:
    rx = re.compile(pattern)
    for m in mods:
        if rx.search(m.raw.path):
            return m.in_features if side == "in" else m.out_features
    return None


# what from_shapes asks of every UNet/DiT path (compiled once: a large LoRA has thousands of modules)
_DIT_PATH = re.compile(r"(double_blocks|single_blocks|single_transformer_blocks)\.|transformer_blocks\.\d+\.").match
_WAN_PATH = re.compile(r"blocks\.\d+\.(self_attn|cross_attn|ffn|attn1|attn2)\.").match
_UNET_PATH = re.compile(r"(input_blocks|middle_block|output_blocks|down_blocks|mid_block|up_blocks)").match


def from_shapes(mods: Sequence[ModuleShape]) -> FamilyGuess | None:
    unet = [m for m in mods if m.raw.component == "unet"]
    paths = [m.raw.path for m in unet]
    if any(map(_DIT_PATH, paths)):
        guess = _dit_family(unet, paths)
        if guess:
            return guess
    if any(p.startswith("joint_blocks.") for p in paths):
        return _sd3(unet, paths)
    if any(map(_WAN_PATH, paths)):
        return _wan(unet, paths)
    if any(map(_UNET_PATH, paths)):
        guess = _sd_unet(unet, mods)
        if guess:
            return guess
    return _from_text_encoders(mods)


def _dit_family(unet: Sequence[ModuleShape], paths: Sequence[str]) -> FamilyGuess | None:
    double = _idx(r"(?:double_blocks|transformer_blocks)\.(\d+)\.", paths)
    single = _idx(r"(?:single_blocks|single_transformer_blocks)\.(\d+)\.", paths)
    hidden = (_width(unet, r"(img_attn[._]qkv|attn\.to_q|linear1|processor\.qkv_lora1)$")
              or _width(unet, r"(img_attn[._]proj|attn\.to_out\.0|linear2)$", side="out"))
    spelling = [p for p in paths if re.search(r"(img|txt)_mlp\.fc[12]$|_mod\.linear$|modulation\.linear$|token_refiner", p)]
    ev = []
    if hidden and hidden not in (3072,) and not single and not spelling:
        if hidden in (1536, 2432):  # diffusers SD3 names use transformer_blocks too
            return _sd3(unet, paths)
        return None
    if (double and max(double) >= 19) or (single and max(single) >= 38) or spelling:
        if spelling:
            ev.append(f"HunyuanVideo spellings ({spelling[0]})")
        if double and max(double) >= 19:
            ev.append(f"double block index {max(double)} (Flux has 0–18)")
        if single and max(single) >= 38:
            ev.append(f"single block index {max(single)} (Flux has 0–37)")
        return FamilyGuess("hunyuan_video", confidence="high", evidence=ev)
    ev.append(f"double/single transformer blocks (double ≤ {max(double) if double else '-'}, "
              f"single ≤ {max(single) if single else '-'})")
    if hidden == 3072:
        ev.append("hidden width 3072")
        return FamilyGuess("flux", confidence="high", evidence=ev)
    return FamilyGuess("flux", confidence="medium", evidence=ev + ["hidden width not measurable from these modules"])


def _sd3(unet: Sequence[ModuleShape], paths: Sequence[str]) -> FamilyGuess:
    hidden = (_width(unet, r"(x_block\.attn\.qkv|x_block\.mlp\.fc1|transformer_blocks\.\d+\.attn\.to_q)$")
              or _width(unet, r"(x_block\.attn\.proj|transformer_blocks\.\d+\.attn\.to_out\.0)$", side="out"))
    blocks = _idx(r"(?:joint_blocks|transformer_blocks)\.(\d+)\.", paths)
    ev = [f"joint blocks 0–{max(blocks) if blocks else '?'}"]
    depth = hidden // 64 if hidden else (38 if blocks and max(blocks) >= 24 else None)
    if hidden:
        ev.append(f"hidden width {hidden} (depth {hidden // 64})")
    variant = None
    if any("attn2" in p for p in paths):
        variant = "3.5-medium"
        ev.append("x_block.attn2 (dual attention) ⇒ SD3.5 Medium")
    elif depth == 38:
        variant = "3.5-large"
    elif depth == 24:
        variant = "medium"
    conf = "high" if hidden else "medium"
    return FamilyGuess("sd3", variant=variant, confidence=conf, evidence=ev, depth=depth or 24)


_WAN_SIZES = {1536: ("1.3b", 30), 3072: ("5b", 30), 5120: ("14b", 40)}


def _wan(unet: Sequence[ModuleShape], paths: Sequence[str]) -> FamilyGuess:
    dim = _width(unet, r"(self_attn\.q|attn1\.to_q|self_attn\.o|attn1\.to_out\.0)$")
    blocks = _idx(r"blocks\.(\d+)\.", paths)
    ev = [f"WAN blocks 0–{max(blocks) if blocks else '?'} (self_attn/cross_attn/ffn)"]
    variant, depth = None, (40 if blocks and max(blocks) >= 30 else 30)
    if dim in _WAN_SIZES:
        variant, depth = _WAN_SIZES[dim]
        ev.append(f"model width {dim} ⇒ {variant.upper()}")
    if any(re.search(r"k_img|v_img|add_k_proj", p) for p in paths):
        variant = f"{variant or '14b'}-i2v"
        ev.append("image cross-attention (k_img/v_img) ⇒ I2V/FLF")
    return FamilyGuess("wan", variant=variant, confidence="high" if dim else "medium", evidence=ev, depth=depth)


_CONTEXT = {768: "sd15", 1024: "sd2", 2048: "sdxl", 1280: "sdxl_refiner"}


def _sd_unet(unet: Sequence[ModuleShape], mods: Sequence[ModuleShape]) -> FamilyGuess | None:
    ctx = _width(unet, r"attn2\.to_k$")
    if ctx in _CONTEXT:
        fam = _CONTEXT[ctx]
        return FamilyGuess(fam, confidence="high", evidence=[f"cross-attention context width {ctx} (attn2.to_k)"])
    # No cross-attention input width (e.g. (IA)³/OFT vectors, conv-only LoCon): fall back on the UNet's structure.
    paths = [m.raw.path for m in unet]
    te = _from_text_encoders(mods)
    sd12 = [p for p in paths if re.match(r"(down_blocks\.0\.attentions|input_blocks\.[12]\.1\.|up_blocks\.3\.attentions|"
                                         r"output_blocks\.(9|10|11)\.1\.|down_blocks\.3\.|input_blocks\.(9|10|11)\.)", p)]
    if sd12:
        if te and te.family in ("sd15", "sd2"):
            return FamilyGuess(te.family, confidence="medium", evidence=[f"SD1/SD2 UNet structure ({sd12[0]})", *te.evidence])
        return FamilyGuess("sd15", confidence="low",
                           evidence=[f"SD1/SD2 UNet structure ({sd12[0]}); SD1 vs SD2 not decidable from these tensors"])
    if any(re.search(r"transformer_blocks\.([2-9])\.", p) for p in paths):
        return FamilyGuess("sdxl", confidence="medium", evidence=["more than 2 transformer blocks per attention (SDXL)"])
    if te:
        return te
    if any(re.match(r"(input_blocks|output_blocks)\.", p) for p in paths):
        return FamilyGuess("sdxl", confidence="low", evidence=["ldm-style UNet names (kohya uses them for SDXL)"])
    return None


def _from_text_encoders(mods: Sequence[ModuleShape]) -> FamilyGuess | None:
    te = [m for m in mods if m.raw.component != "unet"]
    if not te:
        return None
    comps = {m.raw.component for m in te}
    widths = {m.raw.component: m.in_features or m.out_features for m in te
              if re.search(r"(q_proj|k_proj|v_proj|out_proj)$", m.raw.path)}
    if "te3" in comps:
        return FamilyGuess("sd3" if "te2" in comps and widths.get("te2") == 1280 else "flux", confidence="low",
                           evidence=["text encoders only, with a T5 (te3)"])
    if {"te1", "te2"} <= comps and widths.get("te2") == 1280:
        return FamilyGuess("sdxl", confidence="high", evidence=["text encoders only: CLIP-L + CLIP-G (1280 wide)"])
    w = widths.get("te") or widths.get("te1")
    if w == 768:
        return FamilyGuess("sd15", confidence="medium", evidence=["text encoder only: CLIP-L 768 wide"])
    if w == 1024:
        return FamilyGuess("sd2", confidence="high", evidence=["text encoder only: OpenCLIP-H 1024 wide"])
    if w == 1280:
        return FamilyGuess("sdxl_refiner", confidence="medium", evidence=["single 1280-wide text encoder (CLIP-G)"])
    return None


# ---- metadata ------------------------------------------------------------------------------------------------
_ARCH = [(r"^stable-diffusion-v1", "sd15", None), (r"^stable-diffusion-v2-768-v", "sd2", "768-v"),
         (r"^stable-diffusion-v2", "sd2", None), (r"^stable-diffusion-xl-v1-refiner", "sdxl_refiner", None),
         (r"^stable-diffusion-xl", "sdxl", None), (r"^stable-diffusion-3\.?5?-?(medium|large)?", "sd3", None),
         (r"^stable-diffusion-3", "sd3", None), (r"^flux-1-dev", "flux", "dev"), (r"^flux-1-schnell", "flux", "schnell"),
         (r"^flux", "flux", None), (r"^chroma", "flux", "chroma"), (r"^wan", "wan", None),
         (r"^hunyuan-?video", "hunyuan_video", None)]
_BASE_VERSION = [(r"^sd_v1", "sd15", None), (r"^sd_v2_v", "sd2", "768-v"), (r"^sd_v2", "sd2", None),
                 (r"^sdxl", "sdxl", None), (r"^(medium|5-medium|5-large|large|sd3)", "sd3", None),
                 (r"^flux", "flux", None), (r"^chroma", "flux", "chroma"), (r"^wan", "wan", None),
                 (r"^hunyuan", "hunyuan_video", None)]
_ARCH_MATCH = [(re.compile(pattern).match, fam, var) for pattern, fam, var in _ARCH]  # (once per file: compiled)
_BASE_VERSION_MATCH = [(re.compile(pattern).match, fam, var) for pattern, fam, var in _BASE_VERSION]
_DERIVATIVES = [("pony", "pony"), ("illustrious", "illustrious"), ("noob", "noobai"), ("animagine", "animagine")]


def from_metadata(meta: dict[str, str]) -> tuple[str | None, str | None, list[str]]:
    """(family, variant, evidence) from kohya ``ss_*`` / SAI ``modelspec.*`` metadata."""
    ev: list[str] = []
    family = variant = None
    arch = meta.get("modelspec.architecture", "").lower()
    for match, fam, var in _ARCH_MATCH if arch else ():
        if match(arch):
            family, variant = fam, var
            ev.append(f"modelspec.architecture = {arch}")
            break
    base = meta.get("ss_base_model_version", "").lower()
    if base:
        for match, fam, var in _BASE_VERSION_MATCH:
            if match(base):
                if family is None:
                    family, variant = fam, var
                ev.append(f"ss_base_model_version = {base}")
                break
    if family is None and meta.get("ss_v2", "").lower() == "true":
        family = "sd2"
        ev.append("ss_v2 = True")
    model_name = meta.get("ss_sd_model_name", "").lower()
    for needle, name in _DERIVATIVES:
        if needle in model_name:
            variant = variant or name
            ev.append(f"ss_sd_model_name = {meta['ss_sd_model_name']}")
            break
    return family, variant, ev


def _copy_guess(guess: FamilyGuess | None) -> FamilyGuess | None:
    """A deep copy of a guess (its only mutable parts are the two lists of strings)."""
    if guess is None:
        return None
    return FamilyGuess(guess.family, guess.variant, guess.confidence, list(guess.evidence), list(guess.conflicts),
                       guess.reason, guess.depth)


def detect_family(mods: Sequence[ModuleShape], meta: dict[str, str],
                  shape_guess: FamilyGuess | None | bool = False) -> FamilyGuess:
    """Family from shapes (``shape_guess``: a precomputed ``from_shapes`` result, copied before use), then metadata."""
    guess = from_shapes(mods) if shape_guess is False else _copy_guess(shape_guess)
    mfam, mvar, mev = from_metadata(meta)
    if guess is None:
        if mfam:
            return FamilyGuess(mfam, variant=mvar, confidence="medium", evidence=mev + ["no decisive shapes"])
        if not mods:
            reason = "the file has no LoRA modules"
        else:
            reason = "no known module names or shapes, and no base-model metadata"
        return FamilyGuess(UNKNOWN, confidence="none", reason=reason)
    if mfam and mfam != guess.family:
        if guess.confidence == "low":
            return FamilyGuess(mfam, variant=mvar, confidence="medium", evidence=mev,
                               conflicts=[f"weak shape evidence said {guess.family}: {'; '.join(guess.evidence)}"])
        guess.conflicts.append(f"metadata says {mfam} ({'; '.join(mev)}), shapes say {guess.family}")
        guess.confidence = "medium"
    elif mfam:
        guess.evidence.extend(mev)
        if guess.confidence == "low":
            guess.confidence = "medium"
        if mvar and guess.variant is None:
            guess.variant = mvar
    elif mvar and guess.variant is None:
        guess.variant = mvar
        guess.evidence.extend(mev)
    return guess
