"""Helpers for the organize tests: a drop folder of real-format LoRAs (the sample writer) with sidecars, and
snapshots of trees by path and by content hash."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from library_helpers import tiny

from lorawb_core.library.db import open_library
from lorawb_core.organize import OrganizeOptions, organize

TEMP_SUFFIXES = (".lorawb-part", ".lorawb-tmp")


def sha(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree(*folders: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every file below ``folders``: "<folder index>/<rel path>" → sha256 (names in ``skip`` left out)."""
    out = {}
    for i, folder in enumerate(folders):
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file() and p.name not in skip:
                out[f"{i}/{p.relative_to(folder).as_posix()}"] = sha(p)
    return out


def copies(*folders: Path) -> Counter:
    """How many files hold each content hash below ``folders`` (partial copies and temp files left out)."""
    return Counter(sha(p) for f in folders for p in Path(f).rglob("*")
                   if p.is_file() and not p.name.endswith(TEMP_SUFFIXES))


def make_drop(drop: Path, n: int = 4) -> dict[str, str]:
    """``n`` LoRAs of several families, a preview and a civitai sidecar for some; returns path → sha256."""
    drop.mkdir(parents=True, exist_ok=True)
    families = ("sd15", "sdxl", "flux", "sd15", "wan", "sdxl")
    for i in range(n):
        p = tiny(drop / f"lora {i} ünï.safetensors", families[i % len(families)], seed=100 + i)
        if i % 2 == 0:
            (drop / f"lora {i} ünï.preview.png").write_bytes(b"\x89PNG preview %d" % i)
            (drop / f"lora {i} ünï.civitai.info").write_text(json.dumps({"id": i, "name": p.stem}), encoding="utf-8")
    return {str(p): sha(p) for p in drop.iterdir()}


def run(db_path: Path, drop: Path, root: Path, **kw):
    kw.setdefault("preview", False)
    kw.setdefault("settle_window", 0.0)
    with open_library(db_path) as db:
        return organize(db, str(db_path), OrganizeOptions(drop=str(drop), root=str(root), **kw))
