"""The plan: which drop files are tested, where each one goes (with its sidecars), what is left and why.

A plan is pure data: :func:`build_plan` reads the drop folder and the library, decides every target path (free
names, nothing overwritten, nothing outside the root) and changes nothing; ``--dry-run`` prints it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlite_utils import Database

from ..errors import OrganizeError
from ..library.listing import LORA_SUFFIX, FileStat, is_partial, settle
from .files import (
    CONFIG_NAME,
    DUPLICATES_DIR,
    INCOMPATIBLE_DIR,
    INDEX_NAME,
    PREVIEW_CONFIG_NAME,
    PREVIEW_SUFFIXES,
    REASON_SUFFIX,
)
from .moves import PART_SUFFIX, sha256_of
from .slugs import render_rule, unique_name
from .verdict import COMPATIBLE, DUPLICATE, Verdict, test_file

SIDECAR_SUFFIXES = (*PREVIEW_SUFFIXES, ".civitai.info", ".metadata.json", ".json", ".txt", ".yaml")
OURS = {INDEX_NAME, PREVIEW_CONFIG_NAME, CONFIG_NAME, ".lorawb-ids.json"}


@dataclass
class PlannedMove:
    src: str
    dst: str
    sha256: str
    role: str  # lora | sidecar


@dataclass
class PlanItem:
    verdict: Verdict
    folder: str  # the LoRA's target folder (new for a compatible LoRA; _incompatible/_duplicates otherwise)
    moves: list[PlannedMove] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)  # files the run writes for this item

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict.to_dict(), "folder": self.folder, "moves": [asdict(m) for m in self.moves],
                "writes": self.writes}


@dataclass
class Plan:
    root: str
    drop: str
    rule: str
    items: list[PlanItem] = field(default_factory=list)
    left: list[dict[str, str]] = field(default_factory=list)  # {path, reason}: not touched this run

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "drop": self.drop, "rule": self.rule, "items": [i.to_dict() for i in self.items],
                "left": self.left}

    def lines(self) -> list[str]:
        out = [f"organize {self.drop} → {self.root} (rule {self.rule})"]
        for item in self.items:
            v = item.verdict
            out.append(f"{v.verdict:<12} {os.path.basename(v.path)}" + (f": {v.reason}" if v.reason else ""))
            for m in item.moves:
                out.append(f"  move  {m.src} → {m.dst}")
            for w in item.writes:
                out.append(f"  write {w}")
        for left in self.left:
            out.append(f"left         {left['path']}: {left['reason']}")
        out.append(f"write {os.path.join(self.root, INDEX_NAME)}")
        out.append(f"write {os.path.join(self.root, PREVIEW_CONFIG_NAME)} (only if it is missing)")
        return out


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_folders(drop: str, root: str) -> None:
    if not os.path.isdir(drop):
        raise OrganizeError(f"the drop folder {drop} does not exist; create it or set organize.drop / --drop.")
    if not os.path.isdir(root):
        raise OrganizeError(f"the library root {root} does not exist; check --root or the roots in the config.")
    if _inside(drop, root) and os.path.abspath(drop) != os.path.abspath(root):
        raise OrganizeError(f"the drop folder {drop} is inside the library root {root}: its files are already in "
                            "a destination folder. Use the root itself (its loose top-level files) or a folder "
                            "outside it.")


def list_drop(drop: str, settle_window: float, settle_wait: float) -> tuple[list[FileStat], dict[str, list[str]],
                                                                         list[dict[str, str]]]:
    """The drop's top-level LoRAs (stable ones), their sidecars by stem, and what is left alone with the reason."""
    left: list[dict[str, str]] = []
    loras: list[FileStat] = []
    others: list[str] = []
    with os.scandir(drop) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.is_symlink():
            left.append({"path": e.path, "reason": "a symbolic link: organize never follows links"})
        elif not e.is_file(follow_symlinks=False) or e.name in OURS or e.name.endswith(REASON_SUFFIX):
            continue
        elif e.name.endswith((PART_SUFFIX, ".lorawb-tmp")) or is_partial(e.name):
            left.append({"path": e.path, "reason": "a download or copy in progress"})
        elif e.name.lower().endswith(LORA_SUFFIX):
            st = e.stat(follow_symlinks=False)
            loras.append(FileStat(e.path, drop, e.name, st.st_size, st.st_mtime_ns, st.st_ino))
        else:
            others.append(e.path)
    stable, moving = settle(loras, window=settle_window, wait=settle_wait)
    left += [{"path": f.path, "reason": "still being written (its size changed): left for the next run"}
             for f in moving]
    stems = {os.path.basename(f.path)[:-len(LORA_SUFFIX)]: f.path for f in loras}
    sidecars: dict[str, list[str]] = {p: [] for p in stems.values()}
    for path in others:
        name = os.path.basename(path)
        owner = next((stems[name[:-len(s)]] for s in SIDECAR_SUFFIXES
                      if name.lower().endswith(s) and name[:-len(s)] in stems), None)
        if owner is not None:
            sidecars[owner].append(path)
        elif name.lower().endswith(SIDECAR_SUFFIXES):
            left.append({"path": path, "reason": "a sidecar without its LoRA (no .safetensors of that name)"})
    return stable, sidecars, left


def _safe_target(root: str, folder: str) -> None:
    """Refuse a target whose existing part leads out of the root through a symbolic link."""
    real_root = os.path.realpath(root)
    probe = folder
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not _inside(os.path.realpath(probe), real_root):
        raise OrganizeError(f"{folder}: the destination leads out of the root {root} through a symbolic link; "
                            "organize never writes outside the roots. Remove the link or change organize.into.")


def _taken(folder: str, cache: dict[str, set[str]]) -> set[str]:
    if folder not in cache:
        try:
            cache[folder] = {n.casefold() for n in os.listdir(folder)}
        except FileNotFoundError:
            cache[folder] = set()
    return cache[folder]


def build_plan(db: Database | None, drop: str, root: str, rule: str, families: set[str], *,
               settle_window: float = 2.0, settle_wait: float = 0.5) -> Plan:
    """Test every stable drop file and plan its moves and writes (changes nothing)."""
    drop, root = os.path.abspath(drop), os.path.abspath(root)
    check_folders(drop, root)
    render_rule(rule, {})  # the rule's errors before any file is read
    plan = Plan(root=root, drop=drop, rule=rule)
    loras, sidecars, plan.left = list_drop(drop, settle_window, settle_wait)
    cache: dict[str, set[str]] = {}
    seen: dict[str, str] = {}
    for f in loras:
        v = test_file(f.path, db, families, seen)
        stem = os.path.basename(f.path)[:-len(LORA_SUFFIX)]
        if v.verdict == COMPATIBLE:
            values = {"family": v.family, "variant": v.variant or "base", "category": v.category or "GEN",
                      "slug": v.name, "stable_id": v.stable_id or v.name}
            parts = render_rule(rule, values)
            parent = os.path.join(root, *parts[:-1])
            folder = os.path.join(parent, unique_name(parts[-1], _taken(parent, cache)))
            new_stem = stem
        else:
            folder = os.path.join(root, DUPLICATES_DIR if v.verdict == DUPLICATE else INCOMPATIBLE_DIR)
            taken = _taken(folder, cache)
            new_stem = stem
            n = 1
            while any(f"{new_stem}{s}".casefold() in taken for s in (LORA_SUFFIX, REASON_SUFFIX)):
                n += 1
                new_stem = f"{stem}-{n}"
        _safe_target(root, folder)
        item = PlanItem(verdict=v, folder=folder)
        item.moves.append(PlannedMove(f.path, os.path.join(folder, new_stem + LORA_SUFFIX), v.sha256 or "", "lora"))
        for side in sidecars.get(f.path, []):
            name = new_stem + os.path.basename(side)[len(stem):]
            item.moves.append(PlannedMove(side, os.path.join(folder, name), sha256_of(side), "sidecar"))
        if v.verdict == COMPATIBLE:
            item.writes.append(os.path.join(folder, CONFIG_NAME))
        else:
            item.writes.append(os.path.join(folder, new_stem + REASON_SUFFIX))
        taken_here = _taken(folder, cache)
        taken_here.update(os.path.basename(m.dst).casefold() for m in item.moves)
        taken_here.update(os.path.basename(w).casefold() for w in item.writes)
        plan.items.append(item)
    return plan
