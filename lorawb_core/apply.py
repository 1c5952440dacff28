"""Per-block strength plans for a host's LoRA patches: which patch keys get which multiplier.

Host-agnostic: the host (ComfyUI's ``comfy.lora.load_lora``) produces patches keyed by the *model weight key they land
on* (a string, or ``(key, offset…)`` for a slice of a fused weight); the layout registry maps that key to a block; the
block's weight multiplies the strength. Strength for a module is ``strength × weight(block of that module)``: alpha is
never touched, so a block weight of 0.5 gives exactly ``W + s·0.5·ΔW``. Keys outside every block (``time_embed``,
``conv_in`` …) take the weight of the ``REST`` entry.

>>> w = resolve_weights(None, "sd15_unet_17")                     # no profile: every block 1
>>> plan = plan_patches(["diffusion_model.input_blocks.4.1.proj_in.weight"], "sd15_unet_17", w.weights)
>>> [(g.block, g.weight) for g in plan.groups]
[('IN04', 1.0)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .layouts import REST, block_of_target, get_layout

if TYPE_CHECKING:  # pragma: no cover
    from .profiles import Profile

@dataclass
class ResolvedWeights:
    """A weight for every block of a LoRA's full layout, and where it came from."""

    layout_id: str  # the LoRA's full layout (every block it can touch)
    weights: dict[str, float]  # every block, then REST
    source: str  # "uniform" | the profile's label
    notes: list[str] = field(default_factory=list)
    schedule: dict = field(default_factory=dict)  # block → ranges of the run (profiles.schedule); none: whole run

    def text(self, layout_id: str | None = None) -> str:
        """``BLOCK=v, …, REST=v`` over ``layout_id`` (default: the full layout) — the typed-text form the nodes accept
        back."""
        ids = [*get_layout(layout_id).block_ids, REST] if layout_id else list(self.weights)
        return ", ".join(f"{b}={_num(self.weights[b])}" for b in ids if b in self.weights)


def _num(v: float) -> str:
    return f"{v:.6g}"


def resolve_weights(profile: Profile | None, lora_layout_id: str, touched: Iterable[str] = ()) -> ResolvedWeights:
    """The block weights ``profile`` gives a LoRA of layout ``lora_layout_id`` (all 1 without a profile).

    A profile of another layout of the same family is converted (blocks its layout lacks take 0, the LBW rule);
    ``touched`` (the blocks the LoRA really has) narrows the conversion note to the blocks that matter. A profile of
    another family raises :class:`~lorawb_core.errors.ProfileMismatch` naming both layouts.
    """
    full = get_layout(get_layout(lora_layout_id).full)
    if profile is None:
        return ResolvedWeights(full.id, {**dict.fromkeys(full.block_ids, 1.0), REST: 1.0}, "uniform")
    from .profiles import convert_profile

    conv = convert_profile(profile, full.id)
    notes = []
    touched = set(touched)
    filled = [b for b in conv.filled if b in touched] if touched else conv.filled
    if filled:
        notes.append(f"profile {profile.label} has no weight for {', '.join(filled)} (layout {profile.layout_id}); "
                     f"they get {_num(conv.profile.weights[filled[0]])} (LBW rule: blocks a vector does not name are 0)")
    return ResolvedWeights(full.id, dict(conv.profile.weights), profile.label, notes, dict(conv.profile.schedule))


@dataclass
class PatchGroup:
    """Patch keys that share one block, hence one multiplier."""

    block: str | None  # None: the key maps to no block of the layout (it takes REST's weight)
    weight: float
    keys: list[Any] = field(default_factory=list)  # the host's patch keys, untouched


@dataclass
class BlockPlan:
    layout_id: str
    groups: list[PatchGroup]
    unmapped: list[str]  # target keys outside every block (applied at REST's weight)
    muted: list[str]  # blocks whose weight is 0: their patches are not added at all

    @property
    def key_count(self) -> int:
        return sum(len(g.keys) for g in self.groups)


def patch_target(key: Any) -> str:
    """The model weight key a host patch lands on (``(key, offset…)`` tuples are slices of a fused weight)."""
    return key[0] if isinstance(key, tuple) else str(key)


def plan_patches(keys: Iterable[Any], layout_id: str | None, weights: Mapping[str, float], *,
                 unmapped_weight: float = 1.0) -> BlockPlan:
    """Group ``keys`` by block through the registry; each group carries its block's weight.

    Fused q/k/v slices land on one target, so they share a block. Blocks missing from ``weights`` count as 0; keys
    outside every block take ``weights[REST]`` (``unmapped_weight`` when absent). Groups with weight 0 are left out
    (listed in ``muted``) so the host adds nothing for them. Without a layout (a uniform load) every key goes into
    one group at ``unmapped_weight`` and nothing is "outside" a block.
    """
    if layout_id is None:
        keys = list(keys)
        return BlockPlan("", [PatchGroup(None, unmapped_weight, keys)] if unmapped_weight else [], [],
                         [] if unmapped_weight else ["(all)"])
    rest = float(weights.get(REST, unmapped_weight))
    by_block: dict[str | None, PatchGroup] = {}
    unmapped: list[str] = []
    for key in keys:
        target = patch_target(key)
        block = block_of_target(layout_id, target)
        if block is None:
            unmapped.append(target)
            weight = rest
        else:
            weight = float(weights.get(block, 0.0))
        group = by_block.get(block)
        if group is None:
            group = by_block[block] = PatchGroup(block, weight)
        group.keys.append(key)
    order = {b: i for i, b in enumerate(get_layout(get_layout(layout_id).full).block_ids)}
    groups = sorted(by_block.values(), key=lambda g: order.get(g.block, len(order)))
    muted = [g.block or REST for g in groups if g.weight == 0.0]
    return BlockPlan(layout_id, [g for g in groups if g.weight != 0.0], sorted(set(unmapped)), muted)


def block_of_file_key(file_key: str, family: str, layout_id: str) -> str | None:
    """The block of ``layout_id`` that a LoRA file's key (``lora_unet_…_proj_in.alpha``, a module name without its
    parameter suffix, any naming the reader knows) lands on; None outside every block (REST's weight applies).

    For hosts that keep the file's key beside each patched module (A1111's ``NetworkModule.network_key``).
    """
    from .key_groups import split_key
    from .key_targets import canonical_target, parse_module_key

    split = split_key(file_key)
    module = split[0] if split else file_key
    return block_of_target(layout_id, canonical_target(parse_module_key(module), family).key)
