"""Benchmark: ``lorawb organize --no-preview`` on N LoRA files, and ``--reconcile`` on 10,000 folders.

* **organize**: N real-format tiny LoRAs (the sample writer, 4 families, every other one with a preview sidecar) in a
  drop folder → a root, through the journal; files/s, and the share of the run spent hashing (the test's
  SHA256/addnet pass plus the journal's verifications) and in fsync. Baseline in the same run: the unguarded way
  the original system moved files (``shutil.move`` into a folder per file, no test, no journal) on a copy of the
  same drop; the ratio says what testing and safety cost.
* **reconcile**: 10,000 organized folders (config.yaml + a LoRA file each), their index.json and library rows;
  best of 3 (goal < 5 s). Baseline: the original checks alone (folder, config.yaml, a .safetensors per index entry).

Run: ``PYTHONPATH=. python bench/bench_organize.py [--files 5000] [--folders 10000] [--dir /tmp/bench_organize]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import best  # noqa: E402

FAMILIES = ("sd15", "sdxl", "flux", "wan")
TINY = {"sd15": ("*down_blocks_1_*attn2_to_k",), "sdxl": ("*input_blocks_4_1_*attn2_to_k",),
        "flux": ("lora_unet_double_blocks_1_img_attn_qkv",), "wan": ("lora_unet_blocks_2_self_attn_q",)}


def make_drop(drop: Path, n: int) -> None:
    from lorawb_core.samples import write_lora

    drop.mkdir(parents=True)
    old = (int(time.time()) - 3600) * 10**9
    for i in range(n):
        p = write_lora(drop / f"lora {i:05d}.safetensors", FAMILIES[i % 4], te=False, rank=2, seed=i,
                       modules=TINY[FAMILIES[i % 4]])
        os.utime(p, ns=(old, old))
        if i % 2 == 0:
            (drop / f"lora {i:05d}.preview.png").write_bytes(b"\x89PNG %d" % i)


def bench_organize(work: Path, n: int) -> None:
    from lorawb_core import inspection
    from lorawb_core.library.db import open_library
    from lorawb_core.organize import OrganizeOptions, moves, organize

    drop, root = work / "drop", work / "root"
    t0 = time.perf_counter()
    make_drop(drop, n)
    shutil.copytree(drop, work / "baseline-drop")
    print(f"wrote {n} LoRAs in {time.perf_counter() - t0:.1f} s")
    root.mkdir()
    hashing = {"s": 0.0}
    real_hash = inspection.hash_file

    def timed_hash(*args, **kwargs):
        started = time.perf_counter()
        try:
            return real_hash(*args, **kwargs)
        finally:
            hashing["s"] += time.perf_counter() - started

    inspection.hash_file = timed_hash
    db_path = work / "lib.sqlite3"
    with open_library(db_path) as db:
        t0 = time.perf_counter()
        result = organize(db, str(db_path), OrganizeOptions(drop=str(drop), root=str(root), preview=False,
                                                            settle_window=0.0))
        ours = time.perf_counter() - t0
    assert result.error is None and result.organized == n, (result.error, result.organized)
    base_root = work / "baseline-root"
    base_root.mkdir()
    t0 = time.perf_counter()
    for p in sorted((work / "baseline-drop").glob("*.safetensors")):
        folder = base_root / p.stem
        folder.mkdir()
        shutil.move(str(p), folder / p.name)
        side = p.with_name(p.stem + ".preview.png")
        if side.exists():
            shutil.move(str(side), folder / side.name)
    baseline = time.perf_counter() - t0
    hash_s = hashing["s"] + moves.TIMES.hash
    print(f"organize {n} files: {ours:.1f} s = {n / ours:.0f} files/s ({result.moved} moves); hashing "
          f"{hash_s:.1f} s ({hash_s / ours:.0%}), fsync {moves.TIMES.fsync:.1f} s ({moves.TIMES.fsync / ours:.0%})")
    print(f"baseline (shutil.move into folders, no test/journal): {baseline:.2f} s = {n / baseline:.0f} files/s; "
          f"ours/baseline = {ours / baseline:.0f}x the time")


def make_folders(root: Path, n: int, db) -> None:
    from lorawb_core.organize.files import index_bytes

    root.mkdir(parents=True)
    index = {"version": 1, "loras": {}, "rejected": {}}
    rows = []
    for i in range(n):
        rel = f"lora_{i:05d}"
        (root / rel).mkdir()
        (root / rel / f"{rel}.safetensors").write_bytes(b"x")
        (root / rel / "config.yaml").write_text(f"name: {rel}\nfilename: {rel}.safetensors\n")
        sid = f"SD1-GEN-{i + 1:03d}"
        index["loras"][rel] = {"name": rel, "filename": f"{rel}.safetensors", "folder": rel, "stable_id": sid}
        rows.append({"path": str(root / rel / f"{rel}.safetensors"), "file_name": f"{rel}.safetensors",
                     "stable_id": sid, "missing": 0, "scan_state": "ready", "root": str(root)})
    (root / "index.json").write_bytes(index_bytes(index))
    db["loras"].insert_all(rows, batch_size=1000)


def original_checks(root: Path) -> int:
    index = json.loads((root / "index.json").read_text())
    problems = 0
    for rel in index["loras"]:
        folder = root / rel
        problems += not folder.is_dir() or not (folder / "config.yaml").exists() or not any(
            n.endswith(".safetensors") for n in os.listdir(folder))
    return problems


def bench_reconcile(work: Path, n: int) -> None:
    from lorawb_core.library.db import open_library
    from lorawb_core.organize import reconcile

    root, db_path = work / "rec-root", work / "rec.sqlite3"
    with open_library(db_path) as db:
        make_folders(root, n, db)
        reports = []
        ours, ours_med = best(lambda: reports.append(reconcile(db, str(db_path), str(root))), 3)
    assert reports[-1].ok and reports[-1].folders == n, reports[-1].to_dict()["errors"][:3]
    base, _ = best(lambda: original_checks(root), 3)
    print(f"reconcile {n} folders: best {ours:.2f} s (median {ours_med:.2f}); goal < 5 s: "
          f"{'met' if ours < 5 else 'NOT met'}")
    print(f"baseline (the original checks only): {base:.2f} s; ours/baseline = {ours / base:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--folders", type=int, default=10000)
    ap.add_argument("--dir", default="/tmp/bench_organize")
    args = ap.parse_args()
    work = Path(args.dir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    os.environ.setdefault("LORAWB_CONFIG", str(work / "no-config.json"))
    try:
        bench_reconcile(work, args.folders)
        bench_organize(work, args.files)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
