"""Helpers for the library tests: tiny real-format LoRA files and quick scans into real SQLite files on disk."""

from __future__ import annotations

import os
import time
from pathlib import Path

from lorawb_core.library.db import open_library
from lorawb_core.library.scan import scan
from lorawb_core.samples import write_lora

# a few modules per family: real key names and shapes, files of a few KB
TINY_MODULES = {
    "sd15": ("*down_blocks_1_*attn2_to_k",),
    "sd2": ("*down_blocks_1_*attn2_to_k",),
    "sdxl": ("*input_blocks_4_1_*attn2_to_k",),
    "flux": ("lora_unet_double_blocks_1_img_attn_qkv", "lora_unet_single_blocks_3_linear1"),
    "sd3": ("*joint_blocks_1_x_block_attn_qkv",),
    "wan": ("lora_unet_blocks_2_self_attn_q",),
    "hunyuan_video": ("lora_unet_double_blocks_1_img_attn_qkv",),
}
HOUR_AGO_NS = (int(time.time()) - 3600) * 10**9


def tiny(path: Path | str, family: str = "sd15", seed: int = 0, *, metadata: dict | None = None,
         mtime_ns: int | None = None) -> Path:
    """Write a small LoRA (real keys and shapes, rank 2) whose mtime lies in the past (so scans need no settle)."""
    p = write_lora(path, family, te=False, rank=2, seed=seed, modules=TINY_MODULES[family], metadata=metadata)
    t = mtime_ns if mtime_ns is not None else HOUR_AGO_NS + seed * 10**9
    os.utime(p, ns=(t, t))
    return p


def tiny_library(root: Path, per_folder: int = 3) -> list[Path]:
    """A small library over several categories and families (files sorted by path)."""
    plan = [("characters", "sd15"), ("characters/xl", "sdxl"), ("styles", "flux"), ("outfits", "sdxl"),
            ("", "sd15"), ("flux/poses", "flux"), ("video", "wan")]
    out = []
    seed = 0
    for folder, family in plan:
        for i in range(per_folder):
            seed += 1
            out.append(tiny(root / folder / f"{family}_{folder.replace('/', '_') or 'root'}_{i}.safetensors",
                            family, seed))
    return sorted(out)


def db_at(path: Path):
    return open_library(path)


def quick_scan(db, roots, **kw):
    """A scan without worker processes or settle waits (test files are written with old mtimes)."""
    kw.setdefault("workers", 0)
    kw.setdefault("settle_window", 0.0)
    return scan(db, [str(r) for r in roots], **kw)


def ids_by_name(db) -> dict[str, str]:
    return {r["file_name"]: r["stable_id"] for r in db.query("SELECT file_name, stable_id FROM loras")}
