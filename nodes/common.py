"""What the node classes share: choosers, resolving a LoRA, block weights from a link or typed text."""

from __future__ import annotations

import logging
import os
from typing import Any

from lorawb_core.errors import IncompatibleStack, LorawbError
from lorawb_core.refs import (
    EMPTY_CHOICE,
    LoraRef,
    check_usable,
    lora_choices,
    parse_choice,
    ref_from_entry,
    resolve_entry,
)

from . import host

log = logging.getLogger("lorawb")
CATEGORY = "lorawb"
STRENGTH = {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}
LORA_TIP = ("The LoRA, by its stable ID (e.g. SDX-CHR-012 · name). The ID is what counts: renaming or moving the "
            "file inside the loras folders keeps the workflow working.")


def lora_combo() -> tuple[list[str], dict[str, Any]]:
    try:
        host.refresh()
        choices = host.with_db(lora_choices)
    except Exception:  # noqa: BLE001 - a broken library must not break the node list
        log.exception("lorawb: cannot list the library")
        choices = []
    return (choices or [EMPTY_CHOICE]), {"tooltip": LORA_TIP}


def profile_combo() -> tuple[list[str], dict[str, Any]]:
    from lorawb_core.profiles import list_profiles

    try:
        labels = host.with_db(lambda db: [p.label for p in list_profiles(db)])
    except Exception:  # noqa: BLE001
        log.exception("lorawb: cannot list profiles")
        from lorawb_core.profiles import builtin_profiles

        labels = [p.label for p in builtin_profiles()]
    return labels, {"tooltip": "A block-weight profile: a built-in preset or one you saved (name · layout)."}


def validate_lora(value: str) -> bool | str:
    """VALIDATE_INPUTS for a LoRA chooser: the ID format only (renamed labels stay valid; existence is checked when
    the node runs, with the last known path in the message)."""
    try:
        parse_choice(value)
    except LorawbError as exc:
        return str(exc)
    return True


def resolve_lora(value: str, ref: LoraRef | None = None) -> LoraRef:
    """A linked reference wins over the chooser. A LoRA the library could not read, or whose file changed into one
    that cannot be applied, is refused with the reason (:func:`~lorawb_core.refs.check_usable`)."""
    if ref is not None:
        return ref
    entry = host.with_db(resolve_entry, value)
    check_usable(entry)
    return ref_from_entry(entry)


def check_family(ref: LoraRef, model: Any) -> None:
    from .comfy_lora import model_family

    fam = model_family(model) if model is not None else None
    if fam and ref.family and ref.family != fam:
        raise IncompatibleStack(f"{ref.label} is a {ref.family} LoRA (layout {ref.layout_id}) but the model is "
                                f"{fam}; pick a LoRA made for this model.")


def resolve_block_weights(ref: LoraRef, weights: Any = None, weights_text: str = ""):
    """(ResolvedWeights, notes) for ``ref``: a linked profile, else typed text in any dialect, else all 1."""
    from lorawb_core.apply import resolve_weights
    from lorawb_core.layouts import get_layout

    if not ref.full_layout_id:
        raise IncompatibleStack(f"{ref.label}: its base model family ({ref.family or 'unknown'}) has no block layout, "
                                "so block weights cannot be applied; use Load LoRA by stable_id for a uniform strength.")
    notes: list[str] = []
    profile = weights
    if profile is None and weights_text and weights_text.strip():
        from lorawb_core.profiles import list_profiles, parse_weights

        # read in the layout the text was written for (the LoRA's, or a sibling), converted once below
        parsed = host.with_db(lambda db: parse_weights(weights_text, family=ref.family, layout_id=ref.layout_id,
                                                       known=lambda: list_profiles(db, builtins=False),
                                                       convert=False))
        profile, notes = parsed.profile, list(parsed.notes)
    elif profile is not None and weights_text and weights_text.strip():
        notes.append("the linked profile is used; the typed weights are ignored")
    # the LoRA's layout is the smallest one holding every block it touches: what a conversion note must cover
    resolved = resolve_weights(profile, ref.full_layout_id, get_layout(ref.layout_id or ref.full_layout_id).block_ids)
    return resolved, notes + resolved.notes


def file_fingerprint(value: str) -> str:
    """IS_CHANGED: the LoRA's path, mtime and size, so an edited or replaced file re-runs the node."""
    try:
        path = host.with_db(resolve_entry, value).path
        st = os.stat(path)
        return f"{path}:{st.st_mtime_ns}:{st.st_size}"
    except (LorawbError, OSError):
        return "unresolved"


class LoraChooser:
    """Base of the nodes with a ``lora`` chooser: the ID-format check (stale labels stay valid) and a re-run when the
    LoRA's file changes. ComfyUI reads both classmethods by name, inherited ones included."""

    @classmethod
    def VALIDATE_INPUTS(cls, lora):
        return validate_lora(lora)

    @classmethod
    def IS_CHANGED(cls, lora, **_):
        return file_fingerprint(lora)
