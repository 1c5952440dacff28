"""Save a stack's combined block weights as a new library profile of the stack's layout.

>>> saved = save_combined_profile(db, ["SDX-CHR-001:0.8", {"lora": "SDX-STY-004", "weights": "OUTD"}],
...                               "char+style")                                     # doctest: +SKIP
>>> saved.profile.weights["OUT03"]                                                  # doctest: +SKIP

The weight of block *b* is the block weights of the entries averaged with each entry's share of that block
(:func:`~lorawb_core.compose.combined_weight`): ``w(b) = Σ |sᵢ|·nᵢ(b)·wᵢ(b) / Σ |sᵢ|·nᵢ(b)``, with sᵢ the entry's
strength (``strength_clip`` on text-encoder blocks) and nᵢ(b) = ‖ΔWᵢ(b)‖ at weight 1. A block no entry acts on gets
the plain mean of the wᵢ(b); the keys outside every block (``REST``) get the |sᵢ|-weighted mean. For a single LoRA
the profile is its block weights themselves. Strengths stay on the loader: the profile holds where the stack acts,
relative to how strongly. Step ranges (schedules) of the entries' profiles are not combined.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .compose import ComposeVerdict, StackEntry, check_stack, combined_weight
from .errors import IncompatibleStack, UsageError

DIGITS = 6  # stored weights are rounded to this many decimals (exact for a single LoRA's own weights)


@dataclass
class SavedCombined:
    """The stored profile and the verdict it was computed from."""

    profile: Any  # profiles.Profile, with its library id
    verdict: ComposeVerdict

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile.to_dict(), "layout_id": self.verdict.layout_id,
                "entries": len(self.verdict.entries)}


def _entry(value: StackEntry | Mapping[str, Any] | str) -> StackEntry | Mapping[str, Any]:
    """``"ID[:S][@WEIGHTS]"`` text as the CLI takes it, or a StackEntry / JSON entry as it is."""
    if not isinstance(value, str):
        return value
    spec, _, weights = value.partition("@")
    sid, _, strength = spec.partition(":")
    try:
        s = float(strength) if strength else 1.0
    except ValueError:
        raise UsageError(f"{value!r}: the strength after ':' must be a number (e.g. SD1-CHR-001:0.8).") from None
    return {"lora": sid, "strength_model": s, "strength_clip": s, **({"weights": weights} if weights else {})}


def combined_weights(verdict: ComposeVerdict) -> dict[str, float]:
    """The combined weight of every block of the verdict's layout (plus ``REST``), rounded to :data:`DIGITS`."""
    from .profiles.model import REST

    weights = {b.id: round(b.weight, DIGITS) for b in verdict.blocks}
    entries = verdict.entries
    rest = [(e.weights or {}).get(REST) for e in entries]
    if entries and all(w is not None for w in rest):
        weights[REST] = round(combined_weight([e.strength_model for e in entries], [1.0] * len(entries), rest),
                              DIGITS)
    return weights


def save_combined_profile(db, entries: Sequence[StackEntry | Mapping[str, Any] | str], name: str, *,
                          description: str | None = None) -> SavedCombined:
    """Check the stack (the compose gate) and store its combined block weights as the new profile ``name``.

    Raises:
        IncompatibleStack: the gate refused the stack (every reason listed); nothing is stored.
        ProfileError: the name is taken in that layout or not a valid name.
    """
    from .profiles import create_profile

    if not entries:
        raise UsageError("the stack is empty: add at least one LoRA.")
    verdict = check_stack(db, [_entry(e) for e in entries], directions=False)
    if not verdict.ok:
        raise IncompatibleStack("the stack is refused, so it has no combined weights:\n  " +
                                "\n  ".join(verdict.reasons))
    parts = ", ".join(f"{e.stable_id or e.lora}×{e.strength_model:g}" +
                      (f"@{e.weights_source}" if e.weights_source != "uniform" else "") for e in verdict.entries)
    text = description if description is not None else f"combined block weights of {parts}"
    profile = create_profile(db, name, verdict.layout_id, combined_weights(verdict), description=text)
    return SavedCombined(profile, verdict)
