"""Built-in profiles (read-only, ``source="builtin"``, no id) for every layout of the registry.

* Every layout: ``ALL`` (1), ``NONE`` (0, REST too: nothing of the LoRA applied), ``ALL0.5`` (REST 1).
* SD 1.x / 2.x 17-block views: the classic LBW set with LBW's exact vectors (``lbwpresets.txt``); their 26-block
  full layouts: the same set expanded the LBW way (blocks outside the view at 0).
* SDXL 12 / 20 (and the SDXL refiner 12 / 26): the same meanings, BASE (text encoder) at 1 as in LBW.
* Flux: double / single block groups, CLIP, T5, IN and OUT at 1 in each.
* Other layouts (SD3, WAN, HunyuanVideo): ``FRONT``, ``MIDDLE``, ``TAIL`` thirds of the numbered blocks.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from ..layouts import REST, Layout, list_layouts
from .model import Profile, convert_profile, layout_of

# LBW DEF_WEIGHT_PRESET, order BASE, IN01, IN02, IN04, IN05, IN07, IN08, M00, OUT03 … OUT11
_LBW17: list[tuple[str, str, str]] = [
    ("INS", "the shallow input blocks IN01, IN02, IN04", "1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0"),
    ("IND", "the deep input blocks IN05, IN07, IN08", "1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0"),
    ("INALL", "every input block IN01–IN08", "1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0"),
    ("MIDD", "the deep input, middle and deep output blocks IN05–OUT06", "1,0,0,0,1,1,1,1,1,1,1,1,0,0,0,0,0"),
    ("OUTD", "the deep output blocks OUT03–OUT06", "1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0"),
    ("OUTS", "the shallow output blocks OUT07–OUT11", "1,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1"),
    ("OUTALL", "every output block OUT03–OUT11", "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1"),
]

# The same meanings on SDXL's attention blocks (12-block view: IN04, IN05, IN07, IN08, M00, OUT00–OUT05). SDXL has
# two attention levels: IN04/IN05 and OUT03–OUT05 are the shallow (64×64 latent) level, IN07/IN08 and OUT00–OUT02
# the deep (32×32) level next to M00. So INS = IN04/IN05, IND = IN07/IN08, MIDD = deep in + mid + deep out,
# OUTD = OUT00–OUT02, OUTS = OUT03–OUT05. INALL and OUTALL equal Inspire's SDXL-INALL / SDXL-OUTALL.
_SDXL: list[tuple[str, str, tuple[str, ...]]] = [
    ("INS", "the shallow input blocks IN04, IN05", ("IN04", "IN05")),
    ("IND", "the deep input blocks IN07, IN08", ("IN07", "IN08")),
    ("INALL", "every input block IN04–IN08", ("IN04", "IN05", "IN07", "IN08")),
    ("MIDD", "the deep input, middle and deep output blocks IN07–OUT02",
     ("IN07", "IN08", "M00", "OUT00", "OUT01", "OUT02")),
    ("OUTD", "the deep output blocks OUT00–OUT02", ("OUT00", "OUT01", "OUT02")),
    ("OUTS", "the shallow output blocks OUT03–OUT05", ("OUT03", "OUT04", "OUT05")),
    ("OUTALL", "every output block OUT00–OUT05", ("OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05")),
]

# The SDXL refiner's attention levels: IN04/IN05 + OUT06–OUT08 (shallow), IN07/IN08 + OUT03–OUT05 (deep).
_REFINER: list[tuple[str, str, tuple[str, ...]]] = [
    ("INS", "the shallow input blocks IN04, IN05", ("IN04", "IN05")),
    ("IND", "the deep input blocks IN07, IN08", ("IN07", "IN08")),
    ("INALL", "every input block IN04–IN08", ("IN04", "IN05", "IN07", "IN08")),
    ("MIDD", "the deep input, middle and deep output blocks IN07–OUT05",
     ("IN07", "IN08", "M00", "OUT03", "OUT04", "OUT05")),
    ("OUTD", "the deep output blocks OUT03–OUT05", ("OUT03", "OUT04", "OUT05")),
    ("OUTS", "the shallow output blocks OUT06–OUT08", ("OUT06", "OUT07", "OUT08")),
    ("OUTALL", "every output block OUT03–OUT08", ("OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08")),
]


def _range(prefix: str, start: int, stop: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i:02d}" for i in range(start, stop + 1))


# Flux (Inspire's FLUX-DBL-* / FLUX-SINGLE-* groups, by block id): the named blocks at 1, other D/S blocks 0.
_FLUX: list[tuple[str, str, tuple[str, ...]]] = [
    ("DOUBLE", "every double block D00–D18 at 1, single blocks 0", _range("D", 0, 18)),
    ("SINGLE", "every single block S00–S37 at 1, double blocks 0", _range("S", 0, 37)),
    ("DBL-FRONT7", "double blocks D00–D06 at 1, other double and single blocks 0", _range("D", 0, 6)),
    ("DBL-MID6", "double blocks D07–D12 at 1, other double and single blocks 0", _range("D", 7, 12)),
    ("DBL-TAIL6", "double blocks D13–D18 at 1, other double and single blocks 0", _range("D", 13, 18)),
    ("SGL-00-09", "single blocks S00–S09 at 1, other single and double blocks 0", _range("S", 0, 9)),
    ("SGL-10-19", "single blocks S10–S19 at 1, other single and double blocks 0", _range("S", 10, 19)),
    ("SGL-20-29", "single blocks S20–S29 at 1, other single and double blocks 0", _range("S", 20, 29)),
    ("SGL-30-37", "single blocks S30–S37 at 1, other single and double blocks 0", _range("S", 30, 37)),
]
_NUMBERED_GROUPS = {"DOUBLE", "SINGLE", "JOINT", "BLOCKS"}
_TITLES = {"sdxl": "SDXL", "sdxl_refiner": "the SDXL refiner"}


def _generic(layout: Layout) -> list[Profile]:
    specs = [("ALL", 1.0, 1.0, "every block and REST at 1 (the LoRA as trained)."),
             ("NONE", 0.0, 0.0, "every block and REST (the keys outside every block) at 0 (the LoRA switched off)."),
             ("ALL0.5", 0.5, 1.0, "every block at 0.5; REST (the keys outside every block) at 1.")]
    return [Profile(name, layout.id, {**dict.fromkeys(layout.block_ids, value), REST: rest}, "builtin",
                    description=f"{text[0].upper()}{text[1:]}") for name, value, rest, text in specs]


def _ones(layout: Layout, on: set[str], *, keep_groups: frozenset[str] = frozenset()) -> dict[str, float]:
    return {b.id: 1.0 if b.id in on or b.group in keep_groups else 0.0 for b in layout.blocks}


def _unet_set(layout: Layout) -> list[Profile]:
    """The LBW set on a 17/12-block view, or on a full layout by expanding the view's set with 0."""
    if layout.is_view:
        if layout.family in ("sd15", "sd2"):
            return [Profile(name, layout.id, dict(zip(layout.block_ids, (float(x) for x in vec.split(",")), strict=True)),
                            "builtin", description=f"LBW {name}: text encoder (BASE) and {text} at 1, other "
                                                   "blocks 0 (LBW's own vector).")
                    for name, text, vec in _LBW17]
        table = _REFINER if layout.family == "sdxl_refiner" else _SDXL
        return [Profile(name, layout.id, _ones(layout, {"BASE", *blocks}), "builtin",
                        description=f"{name}: text encoder (BASE) and {text} at 1, other blocks 0 (LBW meaning "
                                    f"on {_TITLES[layout.family]}'s attention blocks).")
                for name, text, blocks in table]
    view = next((lay for lay in list_layouts() if lay.full == layout.id and lay.is_view), None)
    if view is None:
        return []
    out = []
    for p in _unet_set(view):
        conv = convert_profile(p, layout.id, fill=0.0)
        out.append(replace(conv.profile, description=p.description.rstrip(".")
                           + f"; the {len(conv.filled)} blocks outside the {len(view.blocks)}-block view at 0 "
                             "(LBW expansion)."))
    return out


def _flux(layout: Layout) -> list[Profile]:
    keep = frozenset({"TE", "IN", "OUT"})
    return [Profile(name, layout.id, _ones(layout, set(blocks), keep_groups=keep), "builtin",
                    description=f"{name}: {text}; CLIP, T5, IN and OUT at 1.") for name, text, blocks in _FLUX]


def _thirds(layout: Layout) -> list[Profile]:
    numbered = [b.id for b in layout.blocks if b.group in _NUMBERED_GROUPS]
    others = [b.id for b in layout.blocks if b.group not in _NUMBERED_GROUPS]
    if len(numbered) < 3:
        return []
    n = len(numbered)
    sizes = [n // 3 + (1 if i < n % 3 else 0) for i in range(3)]
    out, start = [], 0
    for name, size in zip(("FRONT", "MIDDLE", "TAIL"), sizes, strict=True):
        part = numbered[start:start + size]
        start += size
        weights = {b: 1.0 if b in part or b in others else 0.0 for b in layout.block_ids}
        out.append(Profile(name, layout.id, weights, "builtin",
                           description=f"{name}: the {name.lower()} third of the numbered blocks ({part[0]}–{part[-1]})"
                                       f" at 1, the other numbered blocks 0; {', '.join(others)} at 1."))
    return out


@lru_cache(maxsize=1)
def _all_builtins() -> tuple[Profile, ...]:
    out: list[Profile] = []
    for layout in list_layouts():
        out += _generic(layout)
        if layout.family in ("sd15", "sd2", "sdxl", "sdxl_refiner"):
            out += _unet_set(layout)
        elif layout.family == "flux":
            out += _flux(layout)
        else:
            out += _thirds(layout)
    return tuple(out)


def builtin_profiles(layout_id: str | None = None) -> list[Profile]:
    """The built-in profiles, of one layout or of every layout (registry order, then ALL, NONE, ALL0.5, the set)."""
    if layout_id is not None:
        layout_of(layout_id)  # unknown layout → ProfileError
    return [replace(p, weights=dict(p.weights)) for p in _all_builtins()
            if layout_id is None or p.layout_id == layout_id]
