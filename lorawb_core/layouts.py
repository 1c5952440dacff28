"""The layout registry: the only place that knows which block a module belongs to.

A layout is an ordered list of named blocks for one family (``sd15_unet_26``, ``sdxl_unet_12``, ``flux_dit_61``, …).
Each family has one *full* layout that every canonical module path maps into, and may have *views* (the LBW
17/12-block attention views) that list a subset of the same block ids. Layout ids are
``<family>_<type>_<count>``; block ids follow LoRA Block Weight (BASE, IN00, M00, OUT11, D07, S21, …).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .errors import UnknownLayout

# The weights-language entry for the keys that fall in no block of a layout (``time_embed``, ``conv_in``/``conv_out``,
# ``label_emb``, Flux's ``img_in``/``final_layer`` where a layout has no IN/OUT block …): not a block, so vectors never
# count it; 1 unless a profile says otherwise (LBW's rule), 0 in ``NONE``.
REST = "REST"


@dataclass(frozen=True)
class Block:
    id: str
    label: str
    group: str  # TE | IN | MID | OUT | DOUBLE | SINGLE | JOINT | BLOCKS


@dataclass(frozen=True)
class Layout:
    id: str
    family: str
    title: str
    blocks: tuple[Block, ...]
    full: str  # id of the family's full layout (itself for a full layout)
    description: str = ""

    @property
    def block_ids(self) -> list[str]:
        return [b.id for b in self.blocks]

    @property
    def is_view(self) -> bool:
        return self.full != self.id

    def index(self, block_id: str) -> int:
        for i, b in enumerate(self.blocks):
            if b.id == block_id:
                return i
        raise UnknownLayout(f"block '{block_id}' is not in layout {self.id}; its blocks are {', '.join(self.block_ids)}.")

    def to_dict(self) -> dict:
        return {"id": self.id, "family": self.family, "title": self.title, "full": self.full,
                "description": self.description, "count": len(self.blocks),
                "blocks": [{"id": b.id, "label": b.label, "group": b.group} for b in self.blocks]}


@dataclass
class FamilyMap:
    """How one family's canonical paths map to block ids, and which layouts exist for it."""

    family: str
    full: Layout
    views: list[Layout] = field(default_factory=list)
    rules: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = field(default_factory=list)

    def block_of(self, canonical_key: str) -> str | None:
        cache = self.__dict__.setdefault("_cache", {})
        if canonical_key not in cache:
            cache[canonical_key] = self._block_of(canonical_key)
        return cache[canonical_key]

    def _block_of(self, canonical_key: str) -> str | None:
        for pattern, fn in self.rules:
            m = pattern.match(canonical_key)
            if m:
                block = fn(m)
                return block if block in self._ids else None
        return None

    @property
    def _ids(self) -> set[str]:
        return set(self.full.block_ids)

    def choose(self, touched: Iterable[str]) -> Layout:
        """The smallest layout (a view, else the full one) that holds every block the LoRA touches."""
        touched = set(touched)
        for view in sorted(self.views, key=lambda v: len(v.blocks)):
            if touched <= set(view.block_ids):
                return view
        return self.full


def _b(ids: Iterable[str], group: str, label: Callable[[str], str] = lambda s: s) -> list[Block]:
    return [Block(i, label(i), group) for i in ids]


def _nn(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:02d}" for i in range(n)]


_TE_RULES = [(re.compile(r"(clip_[lgh]|t5xxl|llama)\."), lambda m: "BASE")]


def _sd_unet(family: str, title: str, n_in: int, n_out: int, view_in: list[int], view_out: list[int],
             full_count: int, view_count: int, type_: str = "unet") -> FamilyMap:
    blocks = (_b(["BASE"], "TE", lambda s: "Text encoder") + _b(_nn("IN", n_in), "IN") + _b(["M00"], "MID")
              + _b(_nn("OUT", n_out), "OUT"))
    full = Layout(f"{family}_{type_}_{full_count}", family, f"{title} — all {full_count} blocks", tuple(blocks),
                  full=f"{family}_{type_}_{full_count}",
                  description="LBW ids: every UNet block incl. resnet-only and sampler blocks (LoCon).")
    view_ids = {"BASE", "M00"} | {f"IN{i:02d}" for i in view_in} | {f"OUT{i:02d}" for i in view_out}
    view = Layout(f"{family}_{type_}_{view_count}", family, f"{title} — {view_count} attention blocks",
                  tuple(b for b in blocks if b.id in view_ids), full=full.id,
                  description="LBW attention view: the blocks that hold transformer layers (plain LoRA).")
    rules = [(re.compile(r"diffusion_model\.input_blocks\.(\d+)\."), lambda m: f"IN{int(m[1]):02d}"),
             (re.compile(r"diffusion_model\.middle_block\."), lambda m: "M00"),
             (re.compile(r"diffusion_model\.output_blocks\.(\d+)\."), lambda m: f"OUT{int(m[1]):02d}"), *_TE_RULES]
    return FamilyMap(family, full, [view], rules)


def _flux() -> FamilyMap:
    blocks = (_b(["CLIP"], "TE", lambda s: "CLIP-L") + _b(["T5"], "TE", lambda s: "T5-XXL")
              + _b(["IN"], "IN", lambda s: "Input embedders") + _b(_nn("D", 19), "DOUBLE") + _b(_nn("S", 38), "SINGLE")
              + _b(["OUT"], "OUT", lambda s: "Final layer"))
    full = Layout("flux_dit_61", "flux", "Flux.1 — 19 double + 38 single blocks", tuple(blocks), full="flux_dit_61",
                  description="LBW Flux ids: CLIP, T5, IN, D00–D18, S00–S37, OUT.")
    rules = [(re.compile(r"diffusion_model\.double_blocks\.(\d+)\."), lambda m: f"D{int(m[1]):02d}"),
             (re.compile(r"diffusion_model\.single_blocks\.(\d+)\."), lambda m: f"S{int(m[1]):02d}"),
             (re.compile(r"diffusion_model\.(img_in|txt_in|time_in|vector_in|guidance_in)\b"), lambda m: "IN"),
             (re.compile(r"diffusion_model\.final_layer\."), lambda m: "OUT"),
             (re.compile(r"clip_l\."), lambda m: "CLIP"), (re.compile(r"t5xxl\."), lambda m: "T5")]
    return FamilyMap("flux", full, [], rules)


def _sd3(depth: int) -> FamilyMap:
    count = depth + 4
    lid = f"sd3_mmdit_{count}"
    blocks = (_b(["CLIP"], "TE", lambda s: "CLIP-L + CLIP-G") + _b(["T5"], "TE", lambda s: "T5-XXL")
              + _b(["IN"], "IN", lambda s: "Embedders") + _b(_nn("J", depth), "JOINT")
              + _b(["OUT"], "OUT", lambda s: "Final layer"))
    title = "SD3/3.5 Medium — 24 joint blocks" if depth == 24 else f"SD3.5 Large — {depth} joint blocks"
    full = Layout(lid, "sd3", title, tuple(blocks), full=lid, description="CLIP, T5, IN, J00…, OUT.")
    rules = [(re.compile(r"diffusion_model\.joint_blocks\.(\d+)\."), lambda m: f"J{int(m[1]):02d}"),
             (re.compile(r"diffusion_model\.(x_embedder|context_embedder|t_embedder|y_embedder|pos_embed)\b"),
              lambda m: "IN"),
             (re.compile(r"diffusion_model\.final_layer\."), lambda m: "OUT"),
             (re.compile(r"clip_[lg]\."), lambda m: "CLIP"), (re.compile(r"t5xxl\."), lambda m: "T5")]
    return FamilyMap("sd3", full, [], rules)


def _wan(depth: int) -> FamilyMap:
    count = depth + 2
    lid = f"wan_dit_{count}"
    blocks = (_b(["IN"], "IN", lambda s: "Embeddings") + _b(_nn("B", depth), "BLOCKS")
              + _b(["OUT"], "OUT", lambda s: "Head"))
    full = Layout(lid, "wan", f"WAN 2.x — {depth} blocks", tuple(blocks), full=lid, description="IN, B00…, OUT.")
    rules = [(re.compile(r"diffusion_model\.blocks\.(\d+)\."), lambda m: f"B{int(m[1]):02d}"),
             (re.compile(r"diffusion_model\.(patch_embedding|text_embedding|time_embedding|time_projection|img_emb)\b"),
              lambda m: "IN"),
             (re.compile(r"diffusion_model\.head\b"), lambda m: "OUT")]
    return FamilyMap("wan", full, [], rules)


def _hunyuan() -> FamilyMap:
    blocks = (_b(["IN"], "IN", lambda s: "Input embedders + token refiner") + _b(_nn("D", 20), "DOUBLE")
              + _b(_nn("S", 40), "SINGLE") + _b(["OUT"], "OUT", lambda s: "Final layer"))
    full = Layout("hunyuan_video_dit_62", "hunyuan_video", "HunyuanVideo — 20 double + 40 single blocks",
                  tuple(blocks), full="hunyuan_video_dit_62", description="IN, D00–D19, S00–S39, OUT.")
    rules = [(re.compile(r"diffusion_model\.double_blocks\.(\d+)\."), lambda m: f"D{int(m[1]):02d}"),
             (re.compile(r"diffusion_model\.single_blocks\.(\d+)\."), lambda m: f"S{int(m[1]):02d}"),
             (re.compile(r"diffusion_model\.(img_in|txt_in|time_in|vector_in|guidance_in)\b"), lambda m: "IN"),
             (re.compile(r"diffusion_model\.final_layer\."), lambda m: "OUT")]
    return FamilyMap("hunyuan_video", full, [], rules)


# SD1/SD2: attention blocks IN01,02,04,05,07,08, M00, OUT03–OUT11 (LBW BLOCKID17); SDXL: IN04,05,07,08, M00, OUT00–05.
_SD_ATTN_IN, _SD_ATTN_OUT = [1, 2, 4, 5, 7, 8], list(range(3, 12))
FAMILY_MAPS: dict[str, FamilyMap] = {
    "sd15": _sd_unet("sd15", "SD 1.x", 12, 12, _SD_ATTN_IN, _SD_ATTN_OUT, 26, 17),
    "sd2": _sd_unet("sd2", "SD 2.x", 12, 12, _SD_ATTN_IN, _SD_ATTN_OUT, 26, 17),
    "sdxl": _sd_unet("sdxl", "SDXL", 9, 9, [4, 5, 7, 8], list(range(6)), 20, 12),
    "sdxl_refiner": _sd_unet("sdxl_refiner", "SDXL refiner", 12, 12, [4, 5, 7, 8], list(range(3, 9)), 26, 12),
    "flux": _flux(),
    "hunyuan_video": _hunyuan(),
}
_SIZED: dict[tuple[str, int], FamilyMap] = {("sd3", 24): _sd3(24), ("sd3", 38): _sd3(38), ("wan", 30): _wan(30),
                                            ("wan", 40): _wan(40)}

LAYOUTS: dict[str, Layout] = {}
for _fm in [*FAMILY_MAPS.values(), *_SIZED.values()]:
    for _layout in [_fm.full, *_fm.views]:
        LAYOUTS[_layout.id] = _layout


def family_map(family: str, depth: int | None = None) -> FamilyMap | None:
    """The map for a family; SD3 and WAN need their depth (24/38 joint blocks, 30/40 blocks)."""
    if family in FAMILY_MAPS:
        return FAMILY_MAPS[family]
    if family == "sd3":
        return _SIZED[("sd3", 38 if (depth or 0) > 24 else 24)]
    if family == "wan":
        return _SIZED[("wan", 40 if (depth or 0) > 30 else 30)]
    return None


def family_map_for_layout(layout_id: str) -> FamilyMap:
    """The family map whose full layout is (or contains the view) ``layout_id``."""
    full = get_layout(layout_id).full
    for fm in [*FAMILY_MAPS.values(), *_SIZED.values()]:
        if fm.full.id == full:
            return fm
    raise UnknownLayout(f"layout '{layout_id}' has no family map; known layouts: {', '.join(sorted(LAYOUTS))}.")


def block_of_target(layout_id: str, target_key: str) -> str | None:
    """The block (of ``layout_id``'s full layout) that a canonical/ComfyUI weight key belongs to, or None."""
    return family_map_for_layout(layout_id).block_of(target_key)


def entry_of_target(layout_id: str, target_key: str) -> str:
    """The weights entry that drives a weight key: its block, or :data:`REST` when it lies outside every block."""
    return block_of_target(layout_id, target_key) or REST


def get_layout(layout_id: str) -> Layout:
    try:
        return LAYOUTS[layout_id]
    except KeyError:
        raise UnknownLayout(f"unknown layout '{layout_id}'; known layouts: {', '.join(sorted(LAYOUTS))}.") from None


def list_layouts() -> list[Layout]:
    return list(LAYOUTS.values())
