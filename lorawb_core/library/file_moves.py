"""Following files: renames and moves by inode (phase a) and by addnet hash (phase b), restores, merges.

All functions run inside the caller's write transaction.
"""

from __future__ import annotations

import os
from typing import Any

from sqlite_utils import Database

from .listing import FileStat
from .stable_ids import claim_known


def find_moved(db: Database, f: FileStat, vanished: set[str]) -> int | None:
    """The row of a file that was renamed/moved to ``f`` inside the filesystem (same inode, size and mtime) and
    whose old path is gone; None when there is none. Cheap: no file content is read."""
    if not f.inode:
        return None
    for row_id, path, missing in db.execute(
            "SELECT id, path, missing FROM loras WHERE inode = ? AND size = ? AND mtime_ns = ? AND path != ? "
            "ORDER BY missing DESC, id", [f.inode, f.size, f.mtime_ns, f.path]):
        if missing or path in vanished or not os.path.exists(path):
            return row_id
    return None


def relocate(db: Database, row_id: int, f: FileStat, category: str, now: str) -> None:
    """Point a row at its file's new path (rename or move); its ID, hashes and blocks stay."""
    old = db.execute("SELECT path, name FROM loras WHERE id = ?", [row_id]).fetchone()
    values: dict[str, Any] = {"path": f.path, "root": f.root, "rel_path": f.rel_path,
                              "file_name": os.path.basename(f.path), "category": category, "inode": f.inode,
                              "missing": 0, "last_seen": now}
    old_stem = os.path.splitext(os.path.basename(old[0]))[0]
    if old[1] == old_stem:  # the name came from the file name: follow the rename
        stem = os.path.splitext(os.path.basename(f.path))[0]
        values.update(name=stem, sort_key=stem.casefold())
    db["loras"].update(row_id, values)


def merge_into(db: Database, keep: int, drop: int) -> None:
    """Row ``drop`` (just hashed) holds the content of missing row ``keep``: ``keep`` takes over the file, its fresh
    data and blocks, and keeps its stable_id, first_seen and profiles; ``drop`` and its ID are retired."""
    fresh = dict(db["loras"].get(drop))
    for col in ("id", "stable_id", "first_seen", "facets"):  # facets is generated
        fresh.pop(col, None)
    db.execute("DELETE FROM blocks WHERE lora_id = ?", [keep])
    db.execute("UPDATE blocks SET lora_id = ? WHERE lora_id = ?", [keep, drop])
    db.execute("UPDATE profiles SET lora_id = ? WHERE lora_id = ?", [keep, drop])
    db.execute("DELETE FROM lora_details WHERE lora_id = ?", [keep])
    db.execute("UPDATE lora_details SET lora_id = ? WHERE lora_id = ?", [keep, drop])
    db["loras"].delete(drop)
    fresh["missing"] = 0
    db["loras"].update(keep, fresh)


def reconcile(db: Database, row_id: int, addnet: str) -> str | None:
    """Identity check for a row hashed for the first time: ``"merged"`` when it is a missing row's file come back
    (moved by copy, restored from a backup), ``"reclaimed"`` when a ledger/import knew its ID, else None."""
    back = db.execute("SELECT id FROM loras WHERE addnet = ? AND id != ? AND missing = 1 ORDER BY id LIMIT 1",
                      [addnet, row_id]).fetchone()
    if back is not None:
        merge_into(db, back[0], row_id)
        return "merged"
    known = claim_known(db, addnet=addnet)
    if known is not None and not db.execute("SELECT 1 FROM loras WHERE stable_id = ?", [known]).fetchone():
        db["loras"].update(row_id, {"stable_id": known})
        return "reclaimed"
    return None
