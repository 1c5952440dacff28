"""Block-weight profiles: a named map block id → multiplier for one layout of the registry.

A :class:`Profile` always holds a weight for every block of its layout, in layout order, each finite and within
[:data:`WEIGHT_MIN`, :data:`WEIGHT_MAX`]. Profiles convert only between layouts that share a full layout (a view
and its full layout, e.g. ``sd15_unet_17`` ↔ ``sd15_unet_26``); blocks the source lacks take ``fill`` (0 by
default: LBW expands a 17-vector to 26 with 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import ProfileError, ProfileMismatch, UnknownLayout
from ..layouts import REST, Layout, get_layout, list_layouts

WEIGHT_MIN = -10.0
WEIGHT_MAX = 10.0
SOURCES = ("user", "builtin", "imported")
NAME_MAX = 100
_NAME_FORBIDDEN = set(":,;=#\"")  # they would break the LBW / assignment / CSV forms


def fmt_weight(value: float) -> str:
    """A weight as text that reads back to the same float (``1``, ``0.5``, ``-0.25``)."""
    if value == int(value):
        return str(int(value))
    return repr(float(value))


def layout_of(layout_id: str) -> Layout:
    """The registry layout, or a :class:`ProfileError` that lists the known ones."""
    try:
        return get_layout(layout_id)
    except UnknownLayout as exc:
        raise ProfileError(str(exc)) from None


def families() -> list[str]:
    """Every family that has a layout, in registry order."""
    return list(dict.fromkeys(lay.family for lay in list_layouts()))


def family_layouts(family: str) -> list[Layout]:
    """The layouts of one family, views (smallest first) before full layouts, for each model size."""
    found = [lay for lay in list_layouts() if lay.family == family]
    if not found:
        raise ProfileError(f"unknown family '{family}'; known families: {', '.join(families())}.")
    return sorted(found, key=lambda lay: (lay.full, not lay.is_view, len(lay.blocks)))


def siblings(layout: Layout) -> list[Layout]:
    """Layouts that share ``layout``'s full layout (itself included): the ones a profile can convert between."""
    return [lay for lay in list_layouts() if lay.full == layout.full]


def check_name(name: str) -> str:
    """A profile name, stripped; refused when empty, too long, numeric or holding ``: , ; = # "``."""
    if not isinstance(name, str) or not name.strip():
        raise ProfileError("a profile needs a name; give a short non-empty name such as 'soft-style'.")
    name = name.strip()
    bad = sorted({ch for ch in name if ch in _NAME_FORBIDDEN or ord(ch) < 32})
    if bad:
        shown = ", ".join(repr(ch) for ch in bad)
        raise ProfileError(f"profile name {name!r} contains {shown}; names cannot hold : , ; = # \" or control "
                           "characters (they would not survive LBW or CSV export), so choose another name.")
    if len(name) > NAME_MAX:
        raise ProfileError(f"profile name {name[:30]!r}… has {len(name)} characters; use at most {NAME_MAX}.")
    if name[0] in "@{[":
        raise ProfileError(f"profile name {name!r} starts with {name[0]!r}, which marks another syntax; "
                           "start it with a letter or digit.")
    try:
        float(name)
    except ValueError:
        return name
    raise ProfileError(f"profile name {name!r} is a number, which would read as a profile id or a weight; "
                       "add a letter.")


def check_weight(block_id: str, value: object) -> float:
    """One weight as a float, or a :class:`ProfileError` naming the block and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProfileError(f"block {block_id}: weight {value!r} is not a number; give a number between "
                           f"{fmt_weight(WEIGHT_MIN)} and {fmt_weight(WEIGHT_MAX)}.")
    v = float(value)
    if not math.isfinite(v):
        raise ProfileError(f"block {block_id}: weight {v} is not a finite number; give a number between "
                           f"{fmt_weight(WEIGHT_MIN)} and {fmt_weight(WEIGHT_MAX)}.")
    if not WEIGHT_MIN <= v <= WEIGHT_MAX:
        raise ProfileError(f"block {block_id}: weight {fmt_weight(v)} is outside the range {fmt_weight(WEIGHT_MIN)} "
                           f"… {fmt_weight(WEIGHT_MAX)}; bring it into that range.")
    return v


def validate_weights(layout_id: str, weights: Mapping[str, float], *, complete: bool = True) -> dict[str, float]:
    """``weights`` checked against the layout and returned as a dict in layout order.

    Unknown block ids are refused by name (the message lists the layout's ids), values must be finite numbers in
    [WEIGHT_MIN, WEIGHT_MAX], and with ``complete`` every block of the layout needs a weight. :data:`REST` (the keys
    outside every block) is accepted beside the blocks and kept last; it is never required.
    """
    layout = layout_of(layout_id)
    ids = layout.block_ids
    if not isinstance(weights, Mapping):
        raise ProfileError(f"weights for layout {layout_id} must be a mapping block id → number, "
                           f"not {type(weights).__name__}.")
    unknown = [k for k in weights if k not in ids and k != REST]
    if unknown:
        shown = ", ".join(repr(k) for k in unknown[:8]) + (" …" if len(unknown) > 8 else "")
        raise ProfileError(f"block {shown} {'is' if len(unknown) == 1 else 'are'} not in layout {layout_id}; "
                           f"its blocks are {', '.join(ids)} (and {REST} for the keys outside every block).")
    checked = {b: check_weight(b, weights[b]) for b in ids if b in weights}
    if complete and len(checked) < len(ids):
        missing = [b for b in ids if b not in checked]
        raise ProfileError(f"layout {layout_id} needs a weight for every block; missing {', '.join(missing)}. "
                           "Give them, or write the weights as assignments with a default (e.g. 'default=1').")
    if REST in weights:
        checked[REST] = check_weight(REST, weights[REST])
    return checked


@dataclass(frozen=True)
class ProfileStats:
    """Summary of a profile's weights: mean, population variance, min and max."""

    mean: float
    variance: float
    min: float
    max: float

    def to_dict(self) -> dict:
        return {"mean": self.mean, "variance": self.variance, "min": self.min, "max": self.max}


@dataclass
class Profile:
    """A named block-weight map for one layout; ``weights`` holds every block of the layout, in layout order, then
    :data:`REST` (the keys outside every block; 1 when not given, LBW's rule)."""

    name: str
    layout_id: str
    weights: dict[str, float]
    source: str = "user"  # user | builtin | imported
    description: str = ""
    id: int | None = None
    created: str | None = None
    updated: str | None = None

    def __post_init__(self) -> None:
        self.name = check_name(self.name)
        if self.source not in SOURCES:
            raise ProfileError(f"profile source {self.source!r} is not one of {', '.join(SOURCES)}.")
        self.weights = {REST: 1.0, **validate_weights(self.layout_id, self.weights)}
        self.weights[REST] = self.weights.pop(REST)  # last, after the blocks
        self.description = " ".join((self.description or "").split())

    @property
    def layout(self) -> Layout:
        return get_layout(self.layout_id)

    @property
    def family(self) -> str:
        return self.layout.family

    @property
    def builtin(self) -> bool:
        return self.source == "builtin"

    @property
    def label(self) -> str:
        """``"INS · sd15_unet_17"``: the name with its layout, unique among built-ins and a library's profiles."""
        return f"{self.name} · {self.layout_id}"

    @property
    def rest(self) -> float:
        """The weight of the keys outside every block."""
        return self.weights[REST]

    def vector(self) -> list[float]:
        """The block weights in layout order (positional vectors have no place for :data:`REST`)."""
        return [v for b, v in self.weights.items() if b != REST]

    def stats(self) -> ProfileStats:
        v = self.vector()
        mean = math.fsum(v) / len(v)
        return ProfileStats(mean=mean, variance=math.fsum((x - mean) ** 2 for x in v) / len(v), min=min(v),
                            max=max(v))

    def to_dict(self) -> dict:
        """JSON-able: identity, layout and family, the weights by block id, and their stats."""
        return {"id": self.id, "name": self.name, "label": self.label, "layout_id": self.layout_id,
                "family": self.family, "source": self.source, "builtin": self.builtin,
                "description": self.description, "weights": dict(self.weights), "stats": self.stats().to_dict(),
                "created": self.created, "updated": self.updated}

    @classmethod
    def from_dict(cls, data: Mapping) -> Profile:
        """The inverse of :meth:`to_dict` (``layout`` is accepted for ``layout_id``; derived keys are ignored)."""
        if not isinstance(data, Mapping):
            raise ProfileError(f"a profile must be a JSON object, not {type(data).__name__}.")
        layout_id = data.get("layout_id", data.get("layout"))
        if not isinstance(layout_id, str) or "name" not in data or "weights" not in data:
            raise ProfileError("a profile object needs 'name', 'layout_id' (or 'layout') and 'weights'.")
        weights = data["weights"]
        if isinstance(weights, list):  # a bare vector in layout order
            ids = layout_of(layout_id).block_ids
            if len(weights) != len(ids):
                raise ProfileError(f"profile {data['name']!r}: {len(weights)} weights for layout {layout_id}, "
                                   f"which has {len(ids)} blocks.")
            weights = dict(zip(ids, weights, strict=True))
        return cls(name=data["name"], layout_id=layout_id, weights=weights,
                   source=data.get("source") or "user", description=data.get("description") or "",
                   id=data.get("id"), created=data.get("created"), updated=data.get("updated"))


@dataclass
class Conversion:
    """A profile carried to another layout of its family: which target blocks were filled and which were dropped."""

    profile: Profile
    filled: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    note: str = ""


def _ids(ids: list[str], limit: int = 12) -> str:
    return ", ".join(ids[:limit]) + (f" … ({len(ids)} in all)" if len(ids) > limit else "")


def convert_profile(profile: Profile, layout_id: str, *, fill: float = 0.0) -> Conversion:
    """``profile`` in another layout of the same family (a view ↔ its full layout).

    Target blocks the source lacks take ``fill`` (default 0, the LBW rule) and are listed in ``filled``; source
    blocks the target lacks are listed in ``dropped``. Another family (or another model size of one family, such as
    SD3 Medium vs Large) raises :class:`ProfileMismatch`.
    """
    target = layout_of(layout_id)
    source = layout_of(profile.layout_id)
    if target.id == source.id:
        return Conversion(profile, [], [], f"{profile.label} is already in layout {target.id}; nothing converted.")
    if target.full != source.full:
        what = ("another family" if target.family != source.family
                else "another model size of the same family")
        raise ProfileMismatch(f"profile {profile.name!r} is for layout {source.id} ({source.family}) and cannot be "
                              f"converted to layout {target.id} ({target.family}): that is {what}, whose blocks are "
                              "not the same blocks. Choose or create a profile for that layout.")
    fill = check_weight("fill", fill)
    filled = [b for b in target.block_ids if b not in profile.weights]
    dropped = [b for b in source.block_ids if b not in target.block_ids]
    weights = {**{b: profile.weights.get(b, fill) for b in target.block_ids}, REST: profile.rest}
    parts = [f"converted {profile.name!r} from {source.id} to {target.id}"]
    if filled:
        parts.append(f"{len(filled)} block(s) the source lacks take {fmt_weight(fill)}: {_ids(filled)}")
    if dropped:
        parts.append(f"{len(dropped)} block(s) the target lacks were dropped: {_ids(dropped)}")
    if not filled and not dropped:
        parts.append("every block carried over")
    converted = Profile(name=profile.name, layout_id=target.id, weights=weights, source=profile.source,
                        description=profile.description)
    return Conversion(converted, filled, dropped, "; ".join(parts) + ".")


def layouts_for_count(count: int, *, family: str | None = None, layout_id: str | None = None) -> list[Layout]:
    """Layouts with ``count`` blocks: the given layout's siblings, else the family's, else the whole registry."""
    if layout_id is not None:
        pool = siblings(layout_of(layout_id))
    elif family is not None:
        pool = family_layouts(family)
    else:
        pool = list_layouts()
    return [lay for lay in pool if len(lay.blocks) == count]


def resolve_count(count: int, *, family: str | None = None, layout_id: str | None = None) -> Layout:
    """The one layout a vector of ``count`` values is for, or a :class:`ProfileError` saying what to give."""
    found = layouts_for_count(count, family=family, layout_id=layout_id)
    if layout_id is not None:
        target = layout_of(layout_id)
        if family is not None and target.family != family:
            raise ProfileMismatch(f"layout {layout_id} is of family {target.family}, not {family}; give one of them.")
        if found:
            return next((lay for lay in found if lay.id == layout_id), found[0])
        counts = sorted({len(lay.blocks) for lay in siblings(target)})
        raise ProfileError(f"{count} values do not fit layout {layout_id}, which takes "
                           f"{' or '.join(map(str, counts))} values.")
    if len(found) == 1:
        return found[0]
    if family is not None:
        counts = sorted({len(lay.blocks) for lay in family_layouts(family)})
        raise ProfileError(f"{count} values fit no layout of family {family}; it takes "
                           f"{', '.join(map(str, counts))} values.")
    if not found:
        counts = sorted({len(lay.blocks) for lay in list_layouts()})
        raise ProfileError(f"{count} values fit no layout; vectors have {', '.join(map(str, counts))} values.")
    raise ProfileError(f"{count} values fit several layouts ({', '.join(lay.id for lay in found)}); give the family "
                       "or the layout id to choose one.")
