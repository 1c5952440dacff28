"""How nodes and routes name LoRAs: chooser labels ``"FLX-CLT-057 · name"`` and the stable ID inside them.

The stable ID is what counts: a label whose name part is stale (the file was renamed) still resolves, so saved
workflows keep working after renames and moves inside the library roots.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import BrokenLora, LoraMissing, NotInLibrary
from .library.stable_ids import parse_id

SEP = " · "
EMPTY_CHOICE = "(library empty: add LoRAs to a loras folder, then rescan)"


def choice_label(stable_id: str, name: str | None) -> str:
    return f"{stable_id}{SEP}{name}" if name else stable_id


def parse_choice(value: str) -> str:
    """The stable ID in a chooser value (``"SD1-CHR-001 · my char"`` or a bare ``"SD1-CHR-001"``)."""
    text = str(value or "").strip()
    head = text.split(SEP, 1)[0].strip().split(" ", 1)[0].upper()
    if parse_id(head) is None:
        raise NotInLibrary(f"{text!r} does not start with a LoRA stable ID (like SDX-CHR-012); pick a LoRA from the "
                           "list or type its ID.")
    return head


def lora_choices(db) -> list[str]:
    """Chooser labels of every present LoRA with an ID, by ID (one indexed query; fast at 10k+ rows)."""
    rows = db.execute("SELECT stable_id, name FROM loras WHERE missing = 0 AND stable_id IS NOT NULL "
                      "ORDER BY stable_id").fetchall()
    return [choice_label(sid, name) for sid, name in rows]


@dataclass(frozen=True)
class LoraRef:
    """A LoRA as it flows between nodes (the ``LORAWB_LORA`` socket): resolved once, carried by value."""

    stable_id: str
    name: str
    path: str
    family: str | None
    layout_id: str | None
    full_layout_id: str | None

    @property
    def label(self) -> str:
        return choice_label(self.stable_id, self.name)


def resolve_entry(db, value: str):
    """The library entry for a chooser value; clear errors for unknown IDs and missing files.

    Raises:
        NotInLibrary: the ID is not in the library.
        LoraMissing: the library knows the ID but its file is gone (the message names the last known path).
    """
    from .library import get_lora

    stable_id = parse_choice(value)
    entry = get_lora(db, stable_id)
    if entry.missing or not os.path.isfile(entry.path):
        raise LoraMissing(f"LoRA {stable_id} ({entry.name}) is missing: its last known file was {entry.path}. Put it "
                          "back (or anywhere under a loras folder) and rescan; it keeps its ID.")
    return entry


def ref_from_entry(entry) -> LoraRef:
    return LoraRef(stable_id=entry.stable_id, name=entry.name or entry.file_name or entry.stable_id, path=entry.path,
                   family=entry.family, layout_id=entry.layout_id, full_layout_id=entry.full_layout_id)


def check_usable(entry) -> None:
    """Refuse a library entry that cannot be applied, with the stored reason: an ``error`` row (except a readable
    LoRA of a family without a block layout, which still loads at a uniform strength), or a file changed since it
    was indexed whose header now shows a problem (one header read; NaN/Inf needs the tensors and is found when the
    library measures the file again).

    Raises:
        BrokenLora: the entry or its changed file cannot be applied.
    """
    label = choice_label(entry.stable_id, entry.name)
    from .file_tasks import NO_LAYOUT

    usable_without_blocks = not entry.problems and (entry.error or "").startswith(NO_LAYOUT)
    if entry.scan_state == "error" and not usable_without_blocks:
        raise BrokenLora(f"LoRA {label} cannot be used: {entry.error or 'the library could not read it'} "
                         f"({entry.path}; fix or replace the file, then rescan).")
    try:
        st = os.stat(entry.path)
    except OSError:
        return  # resolve_entry reports missing files
    if (st.st_size, st.st_mtime_ns) == (entry.size, entry.mtime_ns):
        return
    from .inspection import broken_reason, summarize_structure

    summary = summarize_structure(entry.path)
    if summary.problems:
        raise BrokenLora(f"LoRA {label} cannot be used: its file changed since it was indexed and now "
                         f"{broken_reason(summary.problems)} ({entry.path}; then rescan).")
