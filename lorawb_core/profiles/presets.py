"""Built-in profiles (read-only, ``source="builtin"``, no id) for every layout of the registry.

* Every layout: ``ALL`` (1), ``NONE`` (0, REST too: nothing of the LoRA applied), ``ALL0.5`` (REST 1).
* Families whose preset set is ``lbw`` (the SD UNets): the classic LBW set (INS, IND, INALL, MIDD, OUTD, OUTS,
  OUTALL) on the LBW view, from the four groups of attention blocks in the family record (for SD 1.x / 2.x these
  are LBW's exact vectors, ``lbwpresets.txt``), text encoder (BASE) at 1 as in LBW; on the full layout the same set
  expanded the LBW way (blocks outside the view at 0).
* ``flux``: double / single block groups, CLIP, T5, IN and OUT at 1 in each.
* ``thirds`` (SD3, WAN, HunyuanVideo): ``FRONT``, ``MIDDLE``, ``TAIL`` thirds of the numbered blocks.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from ..families import FAMILIES, SdUnet
from ..layouts import REST, Layout, list_layouts
from .model import Profile, convert_profile, layout_of


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


def _generic(layout: Layout) -> list[Profile]:
    specs = [("ALL", 1.0, 1.0, "every block and REST at 1 (the LoRA as trained)."),
             ("NONE", 0.0, 0.0, "every block and REST (the keys outside every block) at 0 (the LoRA switched off)."),
             ("ALL0.5", 0.5, 1.0, "every block at 0.5; REST (the keys outside every block) at 1.")]
    return [Profile(name, layout.id, {**dict.fromkeys(layout.block_ids, value), REST: rest}, "builtin",
                    description=f"{text[0].upper()}{text[1:]}") for name, value, rest, text in specs]


def _ones(layout: Layout, on: set[str], *, keep_groups: frozenset[str] = frozenset()) -> dict[str, float]:
    return {b.id: 1.0 if b.id in on or b.group in keep_groups else 0.0 for b in layout.blocks}


def _span(ids: list[str]) -> str:
    """``IN01, IN02, IN04``; a run of three or more consecutive blocks as ``OUT03–OUT06``."""
    nums = [int(b[-2:]) for b in ids]
    if len(ids) >= 3 and nums == list(range(nums[0], nums[0] + len(nums))):
        return f"{ids[0]}–{ids[-1]}"
    return ", ".join(ids)


def _lbw_groups(unet: SdUnet) -> list[tuple[str, str, list[str]]]:
    """LBW's set (name, which blocks in words, the blocks at 1 besides BASE) from the UNet's attention groups."""
    si, di = [f"IN{i:02d}" for i in unet.shallow_in], [f"IN{i:02d}" for i in unet.deep_in]
    do, so = [f"OUT{i:02d}" for i in unet.deep_out], [f"OUT{i:02d}" for i in unet.shallow_out]
    return [("INS", f"the shallow input blocks {_span(si)}", si),
            ("IND", f"the deep input blocks {_span(di)}", di),
            ("INALL", f"every input block {si[0]}–{di[-1]}", si + di),
            ("MIDD", f"the deep input, middle and deep output blocks {di[0]}–{do[-1]}", [*di, "M00", *do]),
            ("OUTD", f"the deep output blocks {_span(do)}", do),
            ("OUTS", f"the shallow output blocks {_span(so)}", so),
            ("OUTALL", f"every output block {do[0]}–{so[-1]}", do + so)]


def _unet_set(layout: Layout) -> list[Profile]:
    """The LBW set on a 17/12-block view, or on a full layout by expanding the view's set with 0."""
    fam = FAMILIES[layout.family]
    if layout.is_view:
        return [Profile(name, layout.id, _ones(layout, {"BASE", *blocks}), "builtin",
                        description=f"{name}: text encoder (BASE) and {text} at 1, other blocks 0 (LBW's {name} on "
                                    f"the attention blocks of {fam.title}).")
                for name, text, blocks in _lbw_groups(fam.architecture)]
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


_SETS = {"lbw": _unet_set, "flux": _flux, "thirds": _thirds}  # a family record's preset set → its builder


@lru_cache(maxsize=1)
def _all_builtins() -> tuple[Profile, ...]:
    out: list[Profile] = []
    for layout in list_layouts():
        out += _generic(layout) + _SETS[FAMILIES[layout.family].presets](layout)
    return tuple(out)


def builtin_profiles(layout_id: str | None = None) -> list[Profile]:
    """The built-in profiles, of one layout or of every layout (registry order, then ALL, NONE, ALL0.5, the set)."""
    if layout_id is not None:
        layout_of(layout_id)  # unknown layout → ProfileError
    return [replace(p, weights=dict(p.weights)) for p in _all_builtins()
            if layout_id is None or p.layout_id == layout_id]
