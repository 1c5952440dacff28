"""The layout registry: the only place that knows which block a module belongs to.

A layout is an ordered list of named blocks for one family (``sd15_unet_26``, ``sdxl_unet_12``, ``flux_dit_61``, …).
Each family of :mod:`.families` has a *full* layout per model size that every canonical module path maps into, and
may have *views* (the LBW 17/12-block attention views) that list a subset of the same block ids; both are built here
from the family record's architecture, by one builder per kind (SD UNet, Flux-style double/single DiT, SD3 MMDiT,
WAN DiT). Layout ids are ``<family>_<type>_<count>``; block ids follow LoRA Block Weight (BASE, IN00, M00, OUT11,
D07, S21, …)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import UnknownLayout
from .families import FAMILIES, DoubleSingleDiT, Family, MMDiT, SdUnet, WanDiT

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
    depth: int | None = None  # numbered blocks, for a family with one layout per model size

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


def _sd_unet(fam: Family, unet: SdUnet) -> list[FamilyMap]:
    blocks = (_b(["BASE"], "TE", lambda s: "Text encoder") + _b(_nn("IN", unet.inputs), "IN") + _b(["M00"], "MID")
              + _b(_nn("OUT", unet.outputs), "OUT"))
    full_id = f"{fam.code}_unet_{len(blocks)}"
    full = Layout(full_id, fam.code, f"{fam.title} — all {len(blocks)} blocks", tuple(blocks), full=full_id,
                  description="LBW ids: every UNet block incl. resnet-only and sampler blocks (LoCon).")
    view_ids = {"BASE", "M00"} | {f"IN{i:02d}" for i in unet.attention_in} | {f"OUT{i:02d}" for i in unet.attention_out}
    view_blocks = tuple(b for b in blocks if b.id in view_ids)
    view = Layout(f"{fam.code}_unet_{len(view_blocks)}", fam.code, f"{fam.title} — {len(view_blocks)} attention blocks",
                  view_blocks, full=full.id,
                  description="LBW attention view: the blocks that hold transformer layers (plain LoRA).")
    rules = [(re.compile(r"diffusion_model\.input_blocks\.(\d+)\."), lambda m: f"IN{int(m[1]):02d}"),
             (re.compile(r"diffusion_model\.middle_block\."), lambda m: "M00"),
             (re.compile(r"diffusion_model\.output_blocks\.(\d+)\."), lambda m: f"OUT{int(m[1]):02d}"), *_TE_RULES]
    return [FamilyMap(fam.code, full, [view], rules)]


def _double_single(fam: Family, dit: DoubleSingleDiT) -> list[FamilyMap]:
    """Flux and HunyuanVideo: [text-encoder blocks], IN, D00…, S00…, OUT."""
    groups = [(bid, "TE", label) for bid, label, _ in dit.text_blocks] + [("IN", "IN", dit.embedders)]
    blocks = ([Block(bid, label, group) for bid, group, label in groups] + _b(_nn("D", dit.double), "DOUBLE")
              + _b(_nn("S", dit.single), "SINGLE") + _b(["OUT"], "OUT", lambda s: "Final layer"))
    lid = f"{fam.code}_dit_{len(blocks)}"
    names = [bid for bid, _, _ in groups] + [f"D00–D{dit.double - 1:02d}", f"S00–S{dit.single - 1:02d}", "OUT"]
    full = Layout(lid, fam.code, f"{fam.title} — {dit.double} double + {dit.single} single blocks", tuple(blocks),
                  full=lid, description=", ".join(names) + ".")
    rules = [(re.compile(r"diffusion_model\.double_blocks\.(\d+)\."), lambda m: f"D{int(m[1]):02d}"),
             (re.compile(r"diffusion_model\.single_blocks\.(\d+)\."), lambda m: f"S{int(m[1]):02d}"),
             (re.compile(r"diffusion_model\.(img_in|txt_in|time_in|vector_in|guidance_in)\b"), lambda m: "IN"),
             (re.compile(r"diffusion_model\.final_layer\."), lambda m: "OUT"),
             *((re.compile(re.escape(encoder) + r"\."), lambda m, bid=bid: bid) for bid, _, encoder in dit.text_blocks)]
    return [FamilyMap(fam.code, full, [], rules)]


def _mmdit(fam: Family, mmdit: MMDiT) -> list[FamilyMap]:
    out = []
    for depth, title in mmdit.sizes:
        blocks = (_b(["CLIP"], "TE", lambda s: "CLIP-L + CLIP-G") + _b(["T5"], "TE", lambda s: "T5-XXL")
                  + _b(["IN"], "IN", lambda s: "Embedders") + _b(_nn("J", depth), "JOINT")
                  + _b(["OUT"], "OUT", lambda s: "Final layer"))
        lid = f"{fam.code}_mmdit_{len(blocks)}"
        full = Layout(lid, fam.code, f"{title} — {depth} joint blocks", tuple(blocks), full=lid,
                      description="CLIP, T5, IN, J00…, OUT.")
        rules = [(re.compile(r"diffusion_model\.joint_blocks\.(\d+)\."), lambda m: f"J{int(m[1]):02d}"),
                 (re.compile(r"diffusion_model\.(x_embedder|context_embedder|t_embedder|y_embedder|pos_embed)\b"),
                  lambda m: "IN"),
                 (re.compile(r"diffusion_model\.final_layer\."), lambda m: "OUT"),
                 (re.compile(r"clip_[lg]\."), lambda m: "CLIP"), (re.compile(r"t5xxl\."), lambda m: "T5")]
        out.append(FamilyMap(fam.code, full, [], rules, depth=depth))
    return out


def _wan(fam: Family, wan: WanDiT) -> list[FamilyMap]:
    out = []
    for depth in wan.depths:
        blocks = (_b(["IN"], "IN", lambda s: "Embeddings") + _b(_nn("B", depth), "BLOCKS")
                  + _b(["OUT"], "OUT", lambda s: "Head"))
        lid = f"{fam.code}_dit_{len(blocks)}"
        full = Layout(lid, fam.code, f"{fam.title} — {depth} blocks", tuple(blocks), full=lid,
                      description="IN, B00…, OUT.")
        rules = [(re.compile(r"diffusion_model\.blocks\.(\d+)\."), lambda m: f"B{int(m[1]):02d}"),
                 (re.compile(r"diffusion_model\.(patch_embedding|text_embedding|time_embedding|time_projection|"
                             r"img_emb)\b"), lambda m: "IN"),
                 (re.compile(r"diffusion_model\.head\b"), lambda m: "OUT")]
        out.append(FamilyMap(fam.code, full, [], rules, depth=depth))
    return out


# One builder per kind of architecture; every family record is built by the one of its kind.
_BUILDERS: dict[type, Callable[[Family, Any], list[FamilyMap]]] = {
    SdUnet: _sd_unet, DoubleSingleDiT: _double_single, MMDiT: _mmdit, WanDiT: _wan}
FAMILY_MAPS: dict[str, list[FamilyMap]] = {f.code: _BUILDERS[type(f.architecture)](f, f.architecture)
                                           for f in FAMILIES.values()}
LAYOUTS: dict[str, Layout] = {lay.id: lay for maps in FAMILY_MAPS.values() for fm in maps
                              for lay in (fm.full, *fm.views)}


def family_map(family: str, depth: int | None = None) -> FamilyMap | None:
    """The map for a family; for a family with several model sizes (SD3, WAN) the smallest that holds ``depth``
    blocks (the largest when none does, the smallest without a depth)."""
    maps = FAMILY_MAPS.get(family)
    if not maps:
        return None
    return next((fm for fm in maps if fm.depth is None or fm.depth >= (depth or 0)), maps[-1])


def family_map_for_layout(layout_id: str) -> FamilyMap:
    """The family map whose full layout is (or contains the view) ``layout_id``."""
    full = get_layout(layout_id).full
    for fm in (fm for maps in FAMILY_MAPS.values() for fm in maps):
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
