"""Hand edits of a LoRA folder's ``config.yaml`` (written by ``lorawb organize``) read back into the library:
``default_weight`` and ``notes`` land in ``lora_details`` at each scan. A config is read again only when its
modification time changed; one ``stat`` per folder of present LoRAs otherwise. A config whose ``filename`` names
another file is not this LoRA's; a config that does not parse is skipped with a warning."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from sqlite_utils import Database

from .db import immediate

CONFIG_NAME = "config.yaml"


def _fields(path: str, file_name: str) -> tuple[float | None, str | None] | None:
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("filename") not in (None, file_name):
        return (None, None)
    weight = data.get("default_weight")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        weight = None
    notes = data.get("notes")
    return (float(weight) if weight is not None else None, str(notes) if notes not in (None, "") else None)


def sync_folder_configs(db: Database, roots: Sequence[str]) -> list[str]:
    """Update ``default_weight`` / ``notes`` of present LoRAs under ``roots`` from their folders' config.yaml;
    returns warnings (configs that do not parse)."""
    warnings: list[str] = []
    placeholders = ", ".join("?" for _ in roots)
    rows = db.execute(f"SELECT l.id, l.path, l.file_name, d.config_mtime_ns FROM loras l LEFT JOIN "
                      f"lora_details d ON d.lora_id = l.id WHERE l.missing = 0 AND l.root IN ({placeholders})",
                      list(roots)).fetchall()
    updates = []
    for row_id, path, file_name, seen_ns in rows:
        config = os.path.join(os.path.dirname(path), CONFIG_NAME)
        try:
            mtime_ns = os.stat(config).st_mtime_ns
        except OSError:
            mtime_ns = None
        if mtime_ns == seen_ns:
            continue
        values = (None, None) if mtime_ns is None else _fields(config, file_name)
        if values is None:
            warnings.append(f"{config}: cannot read it as YAML; default_weight and notes are kept as they were.")
            continue
        updates.append({"lora_id": row_id, "default_weight": values[0], "notes": values[1],
                        "config_mtime_ns": mtime_ns})
    if updates:
        with immediate(db):
            db["lora_details"].upsert_all(updates, pk="lora_id")
    return warnings
