"""``organize --reconcile [--fix]``: do ``index.json``, the folders on disk and the library database agree?

Errors: an indexed folder, its ``config.yaml`` or its LoRA file missing; an index entry the library does not hold
at that path, or holds under another stable ID; a library row under the root whose file is gone. Warnings: organized
folders (a ``config.yaml`` beside a ``.safetensors``) the index does not list. ``--fix`` repairs what is safe:
index entries rebuilt from the folders and the library, a missing ``config.yaml`` recreated, entries of vanished
folders dropped. Files are never moved or deleted by a fix.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlite_utils import Database

from ..library.db import utcnow
from . import journal
from .files import (
    CONFIG_NAME,
    DUPLICATES_DIR,
    INCOMPATIBLE_DIR,
    INDEX_NAME,
    config_bytes,
    config_for,
    index_bytes,
    read_config,
    read_index,
)
from .lock import organize_lock


@dataclass
class Finding:
    kind: str  # missing_folder | missing_config | missing_file | not_in_library | id_mismatch | row_file_gone |
    #            unindexed_folder
    path: str
    message: str
    fixed: bool = False


@dataclass
class ReconcileReport:
    root: str
    folders: int = 0
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(not f.fixed for f in self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "folders": self.folders, "ok": self.ok,
                "errors": [asdict(f) for f in self.errors], "warnings": [asdict(f) for f in self.warnings]}


def _organized_folders(root: str) -> dict[str, list[str]]:
    """Folder rel path → its .safetensors names, for every folder below ``root`` holding a ``config.yaml``."""
    out: dict[str, list[str]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if folder != root or d not in (INCOMPATIBLE_DIR, DUPLICATES_DIR)]
        if CONFIG_NAME in files:
            rel = os.path.relpath(folder, root).replace(os.sep, "/")
            out[rel] = sorted(f for f in files if f.lower().endswith(".safetensors"))
    return out


def _rows(db: Database, root: str) -> dict[str, tuple[str, int]]:
    prefix = root.rstrip(os.sep) + os.sep
    return {r[0]: (r[1], r[2]) for r in db.execute(
        "SELECT path, stable_id, missing FROM loras WHERE path >= ? AND path < ?", [prefix, prefix[:-1] + chr(
            ord(os.sep) + 1)])}


def _entry_from_disk(db_rows: dict[str, tuple[str, int]], root: str, rel: str, files: list[str]) -> dict[str, Any]:
    folder = os.path.join(root, rel)
    config = read_config(os.path.join(folder, CONFIG_NAME)) or {}
    filename = config.get("filename") if config.get("filename") in files else (files[0] if files else "")
    row = db_rows.get(os.path.join(folder, filename))
    return {"name": config.get("name") or os.path.splitext(filename)[0], "filename": filename, "folder": rel,
            "stable_id": row[0] if row else config.get("stable_id"), "family": config.get("family"),
            "variant": config.get("variant"), "layout": config.get("layout"), "sha256": config.get("sha256"),
            "preview_image": config.get("preview_image") or "", "compatible": True, "config": CONFIG_NAME}


def reconcile(db: Database, db_path: str, root: str, *, fix: bool = False) -> ReconcileReport:
    """Check (and with ``fix`` repair) ``root``; see the module docstring."""
    root = os.path.abspath(root)
    report = ReconcileReport(root=root)
    index = read_index(root)
    disk = _organized_folders(root)
    rows = _rows(db, root)
    report.folders = len(disk)
    changed = False
    configs: dict[str, dict[str, Any]] = {}
    for rel, entry in list(index["loras"].items()):
        folder = os.path.join(root, rel)
        lora = os.path.join(folder, entry.get("filename") or "")
        if not os.path.isdir(folder):
            report.errors.append(Finding("missing_folder", folder, f"{folder}: indexed but the folder is gone",
                                         fixed=fix))
            if fix:
                del index["loras"][rel]
                changed = True
            continue
        if not os.path.isfile(lora):
            report.errors.append(Finding("missing_file", lora, f"{lora}: indexed but the LoRA file is gone (nothing "
                                                                "a fix can do: put it back or remove the folder)"))
        if rel not in disk:
            report.errors.append(Finding("missing_config", os.path.join(folder, CONFIG_NAME),
                                         f"{folder}: no {CONFIG_NAME}", fixed=fix and os.path.isfile(lora)))
            if fix and os.path.isfile(lora):
                configs[os.path.join(folder, CONFIG_NAME)] = config_for(entry, utcnow())
        row = rows.get(lora)
        if os.path.isfile(lora) and (row is None or row[1]):
            report.errors.append(Finding("not_in_library", lora, f"{lora}: the library does not hold it here; run "
                                                                 "`lorawb index` on the root"))
        elif row is not None and row[0] != entry.get("stable_id"):
            report.errors.append(Finding("id_mismatch", lora, f"{lora}: index.json says {entry.get('stable_id')}, "
                                                              f"the library {row[0]}", fixed=fix))
            if fix:
                entry["stable_id"] = row[0]
                changed = True
    for path, (sid, missing) in rows.items():
        if not missing and not os.path.exists(path):
            report.errors.append(Finding("row_file_gone", path, f"{path}: the library lists {sid} here but the file "
                                                                "is gone; `lorawb index` marks it missing"))
    for rel, files in disk.items():
        if rel not in index["loras"] and files:
            report.warnings.append(Finding("unindexed_folder", os.path.join(root, rel),
                                           f"{os.path.join(root, rel)}: organized but not in {INDEX_NAME}", fixed=fix))
            if fix:
                index["loras"][rel] = _entry_from_disk(rows, root, rel, files)
                changed = True
    if fix and (changed or configs):
        with organize_lock(db_path, "organize --reconcile --fix"):
            run_id = journal.start_run(db, "reconcile", root, None, None)
            for path, config in configs.items():
                journal.write(db, run_id, path, config_bytes(config))
            if changed:
                index["updated"] = utcnow()
                journal.write(db, run_id, os.path.join(root, INDEX_NAME), index_bytes(index))
            journal.finish_run(db, run_id, "done", report.to_dict())
    return report
