"""What a user types into a weights text box, read into a :class:`Profile`.

Accepted forms (whitespace and newlines anywhere, ``#`` starts a comment):

1. a bare vector ``1,0,0.5,…`` (commas and/or whitespace); its count picks the layout (within the family or the
   layout's siblings when given; without them only when one layout of the registry has that count);
2. LBW ``NAME:v,v,…`` (the same, named);
3. a preset or profile name (``INS``, ``ALL0.5``; with ``known`` also the caller's profiles, e.g. the library's);
4. assignments ``BASE=1, IN04-OUT05=0.5, default=0`` (ranges inclusive along the layout's block order, later
   assignments win, blocks not named take ``default``, itself 1 unless given); ``REST=0`` weights the keys outside
   every block (``time_embed``, ``conv_in``/``conv_out`` …), which ``default`` does not cover (REST is 1 unless named);
5. a JSON object: ``{block: value}`` (read like assignments), one profile ``{"name", "layout", "weights"}`` or an
   export document holding one profile.

With ``layout_id``, the result is in that layout: a vector or profile for a sibling layout of the same family is
converted (missing blocks 0, the LBW rule) and the note says so — unless ``convert=False``, which keeps it in the
sibling layout it was written for (the caller converts once, e.g. to the blocks one LoRA really has). A vector whose
count fits no layout of the family but is one of Inspire Pack's LyCORIS forms (27/28 values for SD 1.x/2.x, 21/22 for
SDXL, 58 or 20 for Flux) is read the way ``lorawb profiles import --dialect inspire`` reads it, and the note says so.

This reads text only: profiles beyond the built-ins come from the caller (``known``), never from a database here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..errors import ProfileError, ProfileMismatch
from ..layouts import REST, Layout, list_layouts
from .inspire_vectors import inspire_weights
from .model import (
    Profile,
    check_name,
    check_weight,
    convert_profile,
    family_layouts,
    fmt_weight,
    layout_of,
    resolve_count,
    siblings,
)
from .presets import builtin_profiles

CUSTOM_NAME = "custom"
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_LBW_LINE = re.compile(r"([^:,=]+?)\s*:\s*(.*)", re.DOTALL)
_SPECIAL = {
    "R": "R is random (a new value every generation), so it has no fixed weight",
    "U": "U is random (a new value every generation), so it has no fixed weight",
    "X": "X takes LBW's extra prompt argument, which a stored profile does not have",
    "A": "A is an Inspire node input (A, A/2), not a weight",
    "B": "B is an Inspire node input (B, B/2), not a weight",
}


@dataclass
class ParsedWeights:
    """The profile a text stands for, which form it was written in, and what was assumed on the way."""

    profile: Profile
    dialect: str  # vector | lbw | preset | profile | assignments | json
    notes: list[str] = field(default_factory=list)


def token_problem(token: str) -> str | None:
    """Why ``token`` is not a weight (``None`` when it is a plain number)."""
    if _NUMBER.fullmatch(token):
        return None
    head = token[:1].upper()
    if head in _SPECIAL and _is_special(token):
        return f"'{token}': {_SPECIAL[head]}"
    return f"'{token}' is not a number"


def _is_special(token: str) -> bool:
    return bool(re.fullmatch(r"[RrUuAaBbXx]([-+/*]?[\d.]*)", token))


def read_number(token: str, where: str) -> float:
    """A plain decimal number (no ``nan``, ``inf`` or ``1_0``), or a :class:`ProfileError` naming ``where``."""
    problem = token_problem(token.strip())
    if problem:
        raise ProfileError(f"{where}: {problem}; type a number.")
    return check_weight(where, float(token))


def split_values(text: str) -> list[str]:
    """Vector values separated by commas and/or whitespace."""
    return [t for t in re.split(r"[,\s]+", text.strip()) if t]


def strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines()).strip()


KnownProfiles = Callable[[], Iterable[Profile]]


def parse_weights(text: str, *, family: str | None = None, layout_id: str | None = None,
                  known: KnownProfiles | None = None, convert: bool = True) -> ParsedWeights:
    """Read ``text`` (see the module docstring for the forms) into a validated profile.

    ``known``: gives the profiles a name may refer to besides the built-ins (``lambda: list_profiles(db,
    builtins=False)`` for the library's); it is called only when the text is a name.
    """
    if not isinstance(text, str):
        raise ProfileError(f"weights must be given as text, not {type(text).__name__}.")
    if family is not None:
        family_layouts(family)  # unknown family → ProfileError
    if layout_id is not None:
        target = layout_of(layout_id)
        if family is not None and target.family != family:
            raise ProfileMismatch(f"layout {layout_id} is of family {target.family}, not {family}; give one of them.")
    raw = text.strip()
    body = raw if raw.startswith("{") else strip_comments(raw)
    if body.startswith("{"):
        try:
            data = json.loads(body)
        except ValueError:
            try:
                data = json.loads(strip_comments(body))  # JSON with # comments
            except ValueError as exc:
                raise ProfileError(f"the weights look like JSON but do not parse ({exc}); check the brackets, "
                                   "quotes and commas.") from None
        return _convert(_from_json(data, family, layout_id), layout_id, convert)
    if not body:
        raise ProfileError("no weights given; type a vector (1,0,0.5,…), a preset name (INS, ALL0.5) or "
                           "assignments (BASE=1, IN04-OUT05=0.5, default=0).")
    m = _LBW_LINE.fullmatch(body)
    if m and "=" not in body:
        name = check_name(m[1])
        return _convert(_from_vector(split_values(m[2]), name, "lbw", family, layout_id), layout_id, convert)
    if "=" in body:
        return _from_assignments(body, family, layout_id)
    tokens = split_values(body)
    numbers = [t for t in tokens if _NUMBER.fullmatch(t)]
    if numbers and (len(numbers) == len(tokens) or "," in body or all(_is_special(t) for t in tokens
                                                                      if t not in numbers)):
        return _convert(_from_vector(tokens, CUSTOM_NAME, "vector", family, layout_id), layout_id, convert)
    if "," not in body:
        return _convert(_from_name(" ".join(tokens), family, layout_id, known), layout_id, convert)
    raise ProfileError(f"cannot read {body[:60]!r}: it is not a vector of numbers, NAME:vector, a preset name, "
                       "BLOCK=value assignments or a JSON object.")


def _convert(parsed: ParsedWeights, layout_id: str | None, convert: bool) -> ParsedWeights:
    """``parsed`` carried into ``layout_id`` (a sibling of the layout it was read as), the note saying so."""
    if convert and layout_id is not None and parsed.profile.layout_id != layout_id:
        conv = convert_profile(parsed.profile, layout_id)
        parsed.notes.append(conv.note[0].upper() + conv.note[1:])
        parsed.profile = conv.profile
    return parsed


def _from_vector(tokens: list[str], name: str, dialect: str, family: str | None,
                 layout_id: str | None) -> ParsedWeights:
    bad = [p for p in (token_problem(t) for t in tokens) if p]
    if bad:
        raise ProfileError(f"the vector holds {len(bad)} value(s) that are not weights: {'; '.join(bad[:3])}. "
                           "Type plain numbers.")
    try:
        layout = resolve_count(len(tokens), family=family, layout_id=layout_id)
    except ProfileError as exc:
        inspire = _inspire_vector(tokens, family, layout_id)
        if inspire is None:
            raise exc from None
        layout_id_read, weights, notes = inspire
        return ParsedWeights(Profile(name, layout_id_read, weights, "user"), dialect, notes)
    weights = {b: read_number(t, b) for b, t in zip(layout.block_ids, tokens, strict=True)}
    notes = [] if layout_id == layout.id else [f"{len(tokens)} values read as layout {layout.id} ({layout.title})."]
    return ParsedWeights(Profile(name, layout.id, weights, "user"), dialect, notes)


def _inspire_vector(tokens: list[str], family: str | None,
                    layout_id: str | None) -> tuple[str, dict[str, float], list[str]] | None:
    """An Inspire Pack LyCORIS/Flux vector read as import reads it, or ``None`` when the count is not one of them."""

    fam = layout_of(layout_id).family if layout_id is not None else family
    values = [read_number(t, f"value {i}") for i, t in enumerate(tokens, 1)]
    read = inspire_weights(values, fam)
    if read is None:
        return None
    lid, weights, notes = read
    if layout_id is not None and layout_of(lid).full != layout_of(layout_id).full:
        return None
    return lid, weights, [f"{len(tokens)} values read as Inspire Pack's vector for layout {lid}: {' '.join(notes)}"]


@dataclass(frozen=True)
class Assignment:
    """One ``KEY=value`` item: a block, an inclusive ``FIRST-LAST`` range, or ``default``."""

    first: str
    last: str
    value: float


def read_assignments(text: str) -> tuple[list[Assignment], float | None]:
    """``BASE=1, IN04-OUT05=0.5; default=0`` → the assignments in order and the default (``None`` if absent)."""
    items: list[Assignment] = []
    default = None
    for item in re.split(r"[,;\n]+", strip_comments(text)):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = "".join(key.split())
        if not sep or not key:
            raise ProfileError(f"'{item}' is not an assignment; write BLOCK=value, FIRST-LAST=value or "
                               "default=value, separated by commas.")
        if key.casefold() == "default":
            default = read_number(value, "default")
            continue
        first, _, last = key.upper().partition("-")
        items.append(Assignment(first, last or first, read_number(value, key.upper())))
    if not items and default is None:
        raise ProfileError("no assignments found; write BLOCK=value pairs such as 'BASE=1, IN04-OUT05=0.5'.")
    return items, default


def apply_assignments(layout: Layout, items: list[Assignment]) -> dict[str, float]:
    """The blocks the assignments name, with their values (later items win), in layout order."""
    ids = layout.block_ids
    named: dict[str, float] = {}
    rest = None
    for a in items:
        if REST in (a.first, a.last):
            if a.first != a.last:
                raise ProfileError(f"{a.first}-{a.last}: {REST} (the keys outside every block) is not a block of the "
                                   f"layout's order, so it cannot end a range; write {REST}=value on its own.")
            rest = a.value
            continue
        for end in (a.first, a.last):
            if end not in ids:
                raise ProfileError(f"block '{end}' is not in layout {layout.id}; its blocks are {', '.join(ids)}.")
        i, j = ids.index(a.first), ids.index(a.last)
        if i > j:
            raise ProfileError(f"range {a.first}-{a.last} runs backwards in layout {layout.id} ({a.last} comes "
                               f"first); write {a.last}-{a.first}.")
        for b in ids[i:j + 1]:
            named[b] = a.value
    return {b: named[b] for b in ids if b in named} | ({} if rest is None else {REST: rest})


def _layout_for_ids(named: set[str], family: str | None) -> Layout:
    pool = family_layouts(family) if family is not None else list_layouts()
    fits = [lay for lay in pool if named <= set(lay.block_ids)]
    groups = {lay.full for lay in fits}
    if len(groups) == 1:
        return min(fits, key=lambda lay: len(lay.blocks))
    where = f"family {family}" if family else "the registry"
    if not fits:
        known = {b for lay in pool for b in lay.block_ids}
        unknown = sorted(named - known) or sorted(named)
        raise ProfileError(f"block {', '.join(unknown)} is in no layout of {where}; check the block ids "
                           "(`lorawb layouts LAYOUT_ID` lists them).")
    raise ProfileError(f"blocks {', '.join(sorted(named))} fit several layouts ({', '.join(lay.id for lay in fits)}); "
                       "give the family or the layout id to choose one.")


def _from_block_map(items: list[Assignment], default: float | None, name: str, dialect: str,
                    family: str | None, layout_id: str | None) -> ParsedWeights:
    named_ids = {b for a in items for b in (a.first, a.last)} - {REST}
    if layout_id is not None:
        layout = layout_of(layout_id)
    elif named_ids:
        layout = _layout_for_ids(named_ids, family)
    else:
        raise ProfileError("only a default was given; name at least one block, or give the family or layout id.")
    named = apply_assignments(layout, items)
    notes = [] if layout_id is not None else [f"read as layout {layout.id} ({layout.title})."]
    rest = [b for b in layout.block_ids if b not in named]
    value = 1.0 if default is None else default
    if rest:
        how = f"default={fmt_weight(value)}" if default is not None else \
            "the default 1 (write default=… to change it)"
        notes.append(f"{len(rest)} block(s) not named take {how}: {', '.join(rest[:10])}"
                     + (" …" if len(rest) > 10 else "") + ".")
    if value != 1.0 and REST not in named:
        notes.append(f"{REST} (the keys outside every block: time_embed, conv_in/conv_out …) is not covered by "
                     f"default and stays 1; write {REST}={fmt_weight(value)} to weight them too.")
    weights = {b: named.get(b, value) for b in layout.block_ids} | {REST: named.get(REST, 1.0)}
    return ParsedWeights(Profile(name, layout.id, weights, "user"), dialect, notes)


def _from_assignments(body: str, family: str | None, layout_id: str | None) -> ParsedWeights:
    items, default = read_assignments(body)
    return _from_block_map(items, default, CUSTOM_NAME, "assignments", family, layout_id)


def _from_json(data: object, family: str | None, layout_id: str | None) -> ParsedWeights:
    if not isinstance(data, dict):
        raise ProfileError("a JSON weights object must be {block: value, …} or a profile object.")
    if "profiles" in data:
        entries = data["profiles"]
        if not isinstance(entries, list) or len(entries) != 1:
            n = len(entries) if isinstance(entries, list) else 0
            raise ProfileError(f"the JSON document holds {n} profiles, and a weights box takes one; import the "
                               "file with `lorawb profiles import`, or paste a single profile.")
        data = entries[0]
        if not isinstance(data, dict):
            raise ProfileError("the profile in the JSON document is not an object.")
    if "weights" in data:
        name = data.get("name") or CUSTOM_NAME
        lid = data.get("layout_id", data.get("layout"))
        weights = data["weights"]
        if lid is None and isinstance(weights, dict):  # a named block map without a layout
            items, default = _json_items(weights)
            parsed = _from_block_map(items, default, check_name(str(name)), "json", family, layout_id)
            parsed.profile.description = str(data.get("description") or "")
            return parsed
        prof = Profile.from_dict({"name": name, "layout_id": lid, "weights": weights,
                                  "description": data.get("description") or ""})
        if family is not None and prof.family != family:
            raise ProfileMismatch(f"the profile {prof.name!r} is for layout {prof.layout_id} ({prof.family}), not "
                                  f"for family {family}; choose a profile of that family.")
        return ParsedWeights(prof, "json", [])
    items, default = _json_items(data)
    return _from_block_map(items, default, CUSTOM_NAME, "json", family, layout_id)


def _json_items(data: dict) -> tuple[list[Assignment], float | None]:
    items, default = [], None
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProfileError(f"block {key}: weight {value!r} is not a number; give a number.")
        if str(key).casefold() == "default":
            default = check_weight("default", value)
        else:
            first, _, last = str(key).strip().upper().partition("-")
            items.append(Assignment(first, last or first, check_weight(str(key), value)))
    return items, default


def _from_name(name: str, family: str | None, layout_id: str | None, known: KnownProfiles | None) -> ParsedWeights:
    if layout_id is not None:
        target = layout_of(layout_id)
        pool = [target, *(lay for lay in siblings(target) if lay.id != target.id)]
    else:
        pool = family_layouts(family) if family is not None else list_layouts()
    order = {lay.id: i for i, lay in enumerate(pool)}
    candidates = [p for lay in pool for p in builtin_profiles(lay.id)]  # copies of this pool's built-ins only
    if known is not None:
        candidates += [p for p in known() if p.layout_id in order]
    matches = [p for p in candidates if p.name == name] or \
              [p for p in candidates if p.name.casefold() == name.casefold()]
    where = f"layout {layout_id}" if layout_id else f"family {family}" if family else "any layout"
    if not matches:
        names = list(dict.fromkeys(p.name for p in candidates if p.layout_id == pool[0].id)) if pool else []
        raise ProfileError(f"'{name}' is not a vector, assignments or a profile known for {where}"
                           + (f" (known for {pool[0].id}: {', '.join(names[:30])})" if names else "")
                           + "; type a vector of numbers, BLOCK=value assignments, or one of those names.")
    matches.sort(key=lambda p: order[p.layout_id])
    layouts = list(dict.fromkeys(p.layout_id for p in matches))
    if layout_id is None and family is None and len(layouts) > 1:
        raise ProfileError(f"'{name}' exists for several layouts ({', '.join(layouts)}); give the family or the "
                           "layout id to choose one.")
    chosen = matches[0]
    notes = []
    if layout_id is None and len(layouts) > 1:
        notes.append(f"'{name}' exists for {', '.join(layouts)}; took the one for {chosen.layout_id}.")
    return ParsedWeights(chosen, "preset" if chosen.builtin else "profile", notes)
