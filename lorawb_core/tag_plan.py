"""From the ``<lorawb:…>`` tags of one prompt to what a host applies: each LoRA's file, its strengths and a weight for
every block of its layout — through the compose gate, host-free (the A1111/Forge adapters only wire the numbers in).

A tag names a LoRA by stable ID or by library name (the LoRA's name or file name, case-insensitive, when exactly one
present LoRA has it). Weights are read by :func:`~lorawb_core.profiles.parse_weights` in the LoRA's family, with the
library's own profiles as names. The stack then goes through :func:`~lorawb_core.compose.check_stack` with the loaded
checkpoint's family: any refusal (unknown LoRA, wrong family — both named —, unreadable file, bad weights) raises
:class:`~lorawb_core.errors.IncompatibleStack` listing every reason. A missing file is refused too, unless
``missing_ok``: then that tag is left out and :attr:`TagPlan.warnings` says so (the host shows it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .compose import StackEntry, check_stack
from .errors import IncompatibleStack, LoraMissing, LorawbError, NotInLibrary
from .prompt_tags import LorawbTag, format_infotext


@dataclass
class PlannedLora:
    """One tag, resolved: what the host loads and the multiplier of each block."""

    tag: LorawbTag
    stable_id: str
    name: str
    path: str
    family: str
    layout_id: str  # the full layout: ``weights`` has every block of it, then REST
    weights: dict[str, float]
    weights_source: str  # "uniform" or the profile's label
    notes: list[str] = field(default_factory=list)

    def infotext_entry(self) -> str:
        return self.tag.infotext_entry(self.stable_id)


@dataclass
class TagPlan:
    loras: list[PlannedLora]
    warnings: list[str]
    model_family: str | None

    def infotext(self) -> str:
        return format_infotext([p.infotext_entry() for p in self.loras])


def resolve_ref(db, ref: str):
    """The library entry a tag names: a stable ID, else the one present LoRA with that name or file name."""
    from .library.stable_ids import parse_id
    from .refs import resolve_entry

    if parse_id(ref.split(" ")[0]) is not None:
        return resolve_entry(db, ref)
    key = ref.strip().lower()
    rows = db.execute(
        "SELECT stable_id FROM loras WHERE stable_id IS NOT NULL AND (lower(name) = ? OR lower(file_name) = ? OR "
        "lower(file_name) IN (? || '.safetensors', ? || '.ckpt', ? || '.pt')) ORDER BY missing, stable_id",
        [key, key, key, key, key]).fetchall()
    ids = list(dict.fromkeys(r[0] for r in rows))
    if not ids:
        raise NotInLibrary(f"no LoRA in the library is called {ref!r}; use its stable ID (the lorawb tab lists them) "
                           "or rescan if the file is new.")
    if len(ids) > 1:
        raise NotInLibrary(f"{len(ids)} LoRAs are called {ref!r} ({', '.join(ids[:6])}); use the stable ID.")
    return resolve_entry(db, ids[0])


def _profile(db, tag: LorawbTag, entry, problems: list[str]):
    """The tag's weights read in the LoRA's family (None: all 1), or None with the problem added."""
    if tag.weights is None:
        return None
    from .profiles import list_profiles, parse_weights

    try:
        parsed = parse_weights(tag.weights, family=entry.family, layout_id=entry.layout_id, convert=False,
                               known=lambda: list_profiles(db, builtins=False))
    except LorawbError as exc:
        problems.append(f"{tag.ref}: weights {tag.weights!r}: {exc}")
        return None
    if parsed.profile.schedule:
        problems.append(f"{tag.ref}: profile {parsed.profile.label} has ranges of its own per block; in A1111/Forge "
                        "only LBW's start=/stop= for the whole LoRA apply — use a profile without ranges.")
        return None
    return parsed.profile


def plan_tags(db, tags: Sequence[LorawbTag], *, model_family: str | None = None, missing_ok: bool = False,
              directions: bool = False) -> TagPlan:
    """Resolve and gate ``tags`` for a model of ``model_family`` (None: not checked against the model).

    Raises:
        IncompatibleStack: the gate refused the stack; the message lists every reason.
    """
    warnings: list[str] = []
    problems: list[str] = []
    kept: list[tuple[LorawbTag, object, object]] = []
    for tag in tags:
        try:
            entry = resolve_ref(db, tag.ref)
        except LoraMissing as exc:
            if missing_ok:
                warnings.append(f"{exc} It was left out of this generation.")
                continue
            problems.append(f"{tag.ref}: {exc}")
            continue
        except LorawbError as exc:
            problems.append(f"{tag.ref}: {exc}")
            continue
        profile = _profile(db, tag, entry, problems) if entry.family else None
        kept.append((tag, entry, profile))
    verdict = None
    if kept:
        by_id = {e.stable_id: e for _, e, _ in kept}
        entries = [StackEntry(e.stable_id, tag.unet_strength, tag.te_strength, profile) for tag, e, profile in kept]
        verdict = check_stack(db, entries, model_family=model_family, directions=directions,
                              resolve=lambda sid: by_id[sid])
        problems += [] if verdict.ok else verdict.reasons
    if problems:
        raise IncompatibleStack("lorawb refused the LoRAs of this prompt:\n" + "\n".join(f"  ✗ {p}" for p in problems))
    if verdict is None:
        return TagPlan([], warnings, model_family)
    planned = [PlannedLora(tag, rep.stable_id, rep.name or rep.stable_id, rep.path, rep.family, rep.full_layout_id,
                           dict(rep.weights or {}), rep.weights_source, list(rep.notes))
               for (tag, _, _), rep in zip(kept, verdict.entries, strict=True)]
    return TagPlan(planned, warnings + list(verdict.warnings), model_family)
