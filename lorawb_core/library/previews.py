"""Preview images next to LoRA files: found by scans (never generated there), recorded per row (``loras.preview``).

A LoRA ``x.safetensors`` has a preview when its folder holds, first match wins, ``x.preview.png``, ``x.preview.jpg``,
``x.preview.jpeg``, ``x.preview.webp`` or ``x.png`` (the convention of ComfyUI-Lora-Manager and A1111's Civitai
helper). Scans look these names up in the folder listing they already made: no extra ``stat`` per LoRA.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from sqlite_utils import Database

from .db import immediate
from .listing import RootListing

SIDECAR_SUFFIXES = (".preview.png", ".preview.jpg", ".preview.jpeg", ".preview.webp", ".png")


def sidecar_candidates(lora_path: str) -> list[str]:
    """The preview paths looked for, in order."""
    stem = os.path.splitext(lora_path)[0]
    return [stem + s for s in SIDECAR_SUFFIXES]


def find_sidecar(lora_path: str, images: set[str] | None = None) -> str | None:
    """The LoRA's preview: looked up in ``images`` (a folder listing) when given, else on disk."""
    for candidate in sidecar_candidates(lora_path):
        if (candidate in images) if images is not None else os.path.isfile(candidate):
            return candidate
    return None


def sync_previews(db: Database, listings: Iterable[RootListing]) -> int:
    """Record the preview of every present LoRA of these listed roots; returns how many rows changed."""
    changed: list[tuple[str | None, str]] = []
    for listing in listings:
        current = dict(db.execute("SELECT path, preview FROM loras WHERE root = ? AND missing = 0", [listing.root]))
        for path in listing.files:
            if path in current:
                found = find_sidecar(path, listing.images)
                if found != current[path]:
                    changed.append((found, path))
    if changed:
        with immediate(db):
            db.conn.executemany("UPDATE loras SET preview = ? WHERE path = ?", changed)
    return len(changed)


def set_preview(db: Database, stable_id: str, path: str | None) -> None:
    """Record a preview just written (or removed) for one LoRA."""
    with immediate(db):
        db.execute("UPDATE loras SET preview = ? WHERE stable_id = ?", [path, stable_id])
