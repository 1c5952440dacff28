"""The LoRAs a batch is about, resolved from the library: by stable ID, chooser label or file path; every LoRA
missing a preview; or a search filter (the library's search API).

A LoRA that cannot be used (unknown, its file gone, unreadable) is not fatal: the caller gets it back as a
:class:`~lorawb_core.skipped.Skipped` with the reason, and the batch goes on with the others.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace

from sqlite_utils import Database

from ..errors import LoraMissing, LorawbError, NotInLibrary, UsageError
from ..library.search import FILTERS, SearchQuery, get_lora, search
from ..refs import LoraRef, parse_choice
from ..skipped import Skipped

PAGE = 500


@dataclass(frozen=True)
class Target(LoraRef):
    """A present, usable LoRA of the library (what the nodes carry), with what a workflow and its preview need."""

    trigger_words: tuple[str, ...] = ()
    preview: str | None = None  # the sidecar preview it already has (absolute path), if any

    @property
    def sidecar(self) -> str:
        """Where a generated preview goes: ``<stem>.preview.png`` next to the LoRA."""
        return os.path.splitext(self.path)[0] + ".preview.png"


def target_from_entry(entry) -> Target:
    """A :class:`Target` from a library entry; a missing file or an unreadable LoRA raises with the reason."""
    if entry.missing or not os.path.isfile(entry.path):
        raise LoraMissing(f"LoRA {entry.stable_id} ({entry.name}) is missing: its last known file was {entry.path}. "
                          "Put it back and rescan; it keeps its ID.")
    if entry.scan_state == "error":
        raise UsageError(f"LoRA {entry.stable_id} ({entry.name}) could not be read ({entry.error}); fix the file and "
                         "rescan.")
    return Target(stable_id=entry.stable_id, name=entry.name or entry.stable_id, path=entry.path,
                  family=entry.family, layout_id=entry.layout_id, full_layout_id=entry.full_layout_id,
                  trigger_words=tuple(entry.trigger_words or ()), preview=getattr(entry, "preview", None))


def stable_id_for(db: Database, ref: str) -> str:
    """The stable ID a CLI/route argument names: an ID, a chooser label, or the path of an indexed file."""
    text = str(ref).strip()
    if os.sep in text or "/" in text or text.lower().endswith(".safetensors"):
        path = os.path.realpath(os.path.abspath(os.path.expanduser(text)))
        row = db.execute("SELECT stable_id FROM loras WHERE path IN (?, ?)", [path, os.path.abspath(text)]).fetchone()
        if row is None or row[0] is None:
            raise NotInLibrary(f"{text} is not in the library; index its folder first (lorawb index FOLDER).")
        return row[0]
    return parse_choice(text)


def resolve(db: Database, ref: str) -> Target:
    """One LoRA by ID, label or path (errors say what to do)."""
    return target_from_entry(get_lora(db, stable_id_for(db, ref)))


def resolve_many(db: Database, refs: list[str]) -> tuple[list[Target], list[Skipped]]:
    """Each ref resolved; the ones that fail come back as skipped with their reason, in order."""
    found: list[Target] = []
    skipped: list[Skipped] = []
    for ref in refs:
        try:
            target = resolve(db, ref)
        except LorawbError as exc:
            skipped.append(Skipped(str(ref), str(exc)))
            continue
        if target.stable_id not in {t.stable_id for t in found}:
            found.append(target)
    return found, skipped


def parse_filter(text: str) -> SearchQuery:
    """``"family=sdxl category=CHR red coat"`` → a search: ``NAME=value`` for the library filters
    (family, variant, layout, format, algorithm, state, category), the other words as full-text search."""
    words, filters = [], {}
    for token in (text or "").split():
        name, eq, value = token.partition("=")
        if eq and name in FILTERS:
            filters[name] = value
        elif eq:
            raise UsageError(f"--filter {token!r}: {name!r} is not a filter; use {', '.join(FILTERS)} (NAME=value) "
                             "or plain words.")
        else:
            words.append(token)
    return SearchQuery(text=" ".join(words), **filters, missing=False, sort="name", limit=PAGE)


def _pages(db: Database, q: SearchQuery) -> Iterator[list]:
    offset = 0
    while True:
        page = search(db, replace(q, offset=offset))
        yield page.items
        offset += len(page.items)
        if not page.has_more or not page.items:
            return


def matching(db: Database, filter_text: str = "", *, missing_preview: bool = False
             ) -> tuple[list[Target], list[Skipped]]:
    """Every present LoRA matching the filter (all of them for ""), optionally only those without a preview."""
    found: list[Target] = []
    skipped: list[Skipped] = []
    for items in _pages(db, parse_filter(filter_text)):
        for entry in items:
            if missing_preview and getattr(entry, "preview", None):
                continue
            try:
                found.append(target_from_entry(entry))
            except LorawbError as exc:
                skipped.append(Skipped(entry.stable_id or entry.path, str(exc)))
    return found, skipped
