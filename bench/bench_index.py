"""Library indexing benchmark: structure-phase rate, unchanged rescan, search latency.

    python bench/bench_index.py [--files 10000] [--rows 100000] [--workers 2] [--dir DIR] [--keep]

Builds N LoRA files with the real key sets and shapes of SD1.5, SDXL and Flux LoRAs (kohya naming; ranks 4-64,
with and without text encoders, some LoCon) and per-file kohya metadata. Each header is written for real; the
tensor data is a sparse hole (``truncate``), so 10,000 files take about 2 GB of disk (their headers: an SDXL LoRA
with both text encoders has ~3,000 tensors) instead of ~900 GB. Then, in one run:

1. structure phase (``lorawb index --structure-only``) over all N files, fresh database: files/s (goal ≥ 2,000/s);
2. an unchanged rescan of all N (goal < 1 s);
3. search latency p50/p95 over 100,000 rows (the N real rows plus synthetic ones), for a mix of word queries,
   filters, sorts and pages (goal p95 < 20 ms).

It also prints where the structure phase spends its time: ``summarize_structure`` (the scanner's header analysis)
and the full ``inspect_structure`` per file by family (one process, structure caches warm), and the scanner's own rate
with header analysis replaced by a canned result.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lorawb_core.library import open_library, scan, search  # noqa: E402
from lorawb_core.library.search import SearchQuery  # noqa: E402
from lorawb_core.samples import module_shapes  # noqa: E402

FOLDERS = ["characters", "characters/anime", "styles", "concepts", "clothing", "poses", "backgrounds", "sdxl/styles",
           "flux/characters", "flux", "misc", ""]
WORDS = ["anime", "girl", "style", "realistic", "portrait", "pony", "detail", "tweaker", "pixel", "art", "ink",
         "watercolor", "armor", "dress", "kimono", "cyberpunk", "fantasy", "landscape", "castle", "neon", "film",
         "grain", "lighting", "hands", "eyes", "hair", "robot", "mecha", "cat", "dog", "sketch", "comic", "oil",
         "painting", "photo", "vintage", "gothic", "elf", "witch", "samurai", "ninja", "beach", "city", "forest"]
# (family, te, conv, ranks): the structures a real library holds, from small SD1.5 to large SDXL/Flux files
STRUCTURES = [("sd15", True, False, (8, 16, 32, 64)), ("sd15", False, True, (8, 16)), ("sdxl", True, False, (4, 16, 32)),
              ("sdxl", False, False, (8, 32)), ("sdxl", False, True, (16,)), ("flux", False, False, (4, 16, 32)),
              ("flux", True, False, (16,))]


def _tensors(family: str, te: bool, conv: bool, rank: int) -> list[tuple[str, list[int]]]:
    out = []
    for key, s in module_shapes(family, "kohya", te=te, conv=conv).items():
        r = max(1, min(rank, s.out_features, s.in_features))
        if s.is_conv:
            out.append((f"{key}.lora_down.weight", [r, s.in_features, *s.kernel]))
            out.append((f"{key}.lora_up.weight", [s.out_features, r, 1, 1]))
        else:
            out.append((f"{key}.lora_down.weight", [r, s.in_features]))
            out.append((f"{key}.lora_up.weight", [s.out_features, r]))
        out.append((f"{key}.alpha", []))
    return sorted(out)


def _index(tensors: list[tuple[str, list[int]]]) -> tuple[dict, int]:
    header, offset = {}, 0
    for key, shape in tensors:
        n = 2
        for d in shape:
            n *= d
        header[key] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    return header, offset


def write_sparse_lora(path: Path, index: dict, data_bytes: int, metadata: dict[str, str]) -> None:
    """A safetensors file whose header is real and whose data region is a hole (reads as zeros)."""
    header = dict(index)
    header["__metadata__"] = metadata
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(len(blob).to_bytes(8, "little"))
        fh.write(blob)
        fh.truncate(8 + len(blob) + data_bytes)


def build_library(root: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    structures = [(f, te, conv, r) for f, te, conv, ranks in STRUCTURES for r in ranks]
    indexes = {s: _index(_tensors(*s)) for s in structures}
    for i in range(n):
        fam, te, conv, rank = s = structures[i % len(structures)]
        index, data = indexes[s]
        name = "_".join(rng.sample(WORDS, 2)) + f"_{i:05d}"
        base = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0", "flux": "flux1"}[fam]
        trigger = rng.choice(WORDS) + str(i % 97)
        meta = {"ss_output_name": name, "ss_base_model_version": base, "ss_network_module": "networks.lora",
                "ss_network_dim": str(rank), "ss_network_alpha": str(rank // 2), "ss_steps": str(rng.randint(500, 9000)),
                "ss_tag_frequency": json.dumps({f"10_{trigger}": {trigger: 30, "1girl": 20, rng.choice(WORDS): 7}}),
                "ss_num_train_images": "30", "ss_learning_rate": "0.0001"}
        folder = root / FOLDERS[i % len(FOLDERS)]
        folder.mkdir(parents=True, exist_ok=True)
        write_sparse_lora(folder / f"{name}.safetensors", index, data, meta)


def fill_rows(db, target: int, seed: int = 1) -> None:
    """Synthetic rows (copies of real ones with new names, paths, IDs and strengths) up to ``target`` rows."""
    rng = random.Random(seed)
    real = list(db.query("SELECT * FROM loras"))
    have = len(real)
    cols = [c for c in real[0] if c not in ("id", "facets")]
    rows = []
    for i in range(target - have):
        r = dict(rng.choice(real))
        r.pop("id")
        name = " ".join(rng.sample(WORDS, 3)) + f" v{i % 9}"
        r.update(name=name, sort_key=name.casefold(), path=f"/synthetic/{i}.safetensors", file_name=f"{i}.safetensors",
                 stable_id=f"SYN-{i // 1000:03d}-{i % 1000:03d}", trigger_words=json.dumps([rng.choice(WORDS)]),
                 size=rng.randint(10**6, 10**9), total_norm=rng.random() * 10 if rng.random() < 0.7 else None,
                 scan_state="ready" if rng.random() < 0.7 else "pending", missing=int(rng.random() < 0.05),
                 first_seen=f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T00:00:00Z")
        rows.append({c: r.get(c) for c in cols})
    db["loras"].insert_all(rows, batch_size=2000)


def search_latencies(db, runs: int, seed: int = 2) -> list[float]:
    rng = random.Random(seed)
    families = ["sd15", "sdxl", "flux", None, None]
    sorts = [None, "name", "added", "size", "strength"]
    times = []
    for i in range(runs):
        kind = i % 4
        q = SearchQuery(
            text=" ".join(rng.sample(WORDS, rng.choice([1, 1, 2]))) if kind != 0 else "",
            family=rng.choice(families), sort=rng.choice(sorts), descending=rng.random() < 0.5,
            limit=50, offset=rng.choice([0, 0, 50, 500]), state="ready" if kind == 3 else None,
            layout="sdxl_unet_20" if kind == 2 else None)
        if kind == 1:  # typing a prefix
            q.text = rng.choice(WORDS)[:3]
        t = time.perf_counter()
        search(db, q)
        times.append(time.perf_counter() - t)
    return times


def analysis_cost(root: Path, per_structure: int = 20) -> dict[str, tuple[float, float]]:
    """Mean time per file (ms, this process, structure caches warm) per family of ``summarize_structure`` (what the
    structure phase runs) and of ``inspect_structure`` (the full header analysis: module reports, alpha scalars)."""
    from lorawb_core.inspection import inspect_structure, summarize_structure

    by_family: dict[str, list[Path]] = {}
    for p in sorted(root.rglob("*.safetensors")):
        by_family.setdefault(json.loads(_meta(p))["ss_base_model_version"], []).append(p)
    out = {}
    for base, paths in sorted(by_family.items()):
        sample = paths[:per_structure * 4]
        costs = []
        for fn in (summarize_structure, inspect_structure):
            for p in sample[:8]:
                fn(p)
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                for p in sample:
                    fn(p)
                best = min(best, (time.perf_counter() - t) / len(sample) * 1000)
            costs.append(best)
        out[base] = (costs[0], costs[1])
    return out


def _meta(path: Path) -> str:
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        return json.dumps(json.loads(fh.read(n))["__metadata__"])


def scanner_overhead(root: Path, db_path: Path) -> float:
    """files/s of everything but header analysis (listing, planning, ID allocation, batched writes with the FTS
    triggers): ``work.analyse`` is replaced by a canned copy of one real analysis."""
    import lorawb_core.library.work as work

    real = work.analyse
    canned: dict[str, dict] = {}

    def canned_analyse(job):
        if "row" not in canned:
            canned["row"] = real(job)
        name = Path(job[0]).stem
        return {**canned["row"], "name": name, "sort_key": name.casefold(), "size": job[1], "mtime_ns": job[2]}

    work.analyse = canned_analyse
    try:
        db = open_library(db_path)
        t = time.perf_counter()
        s = scan(db, [str(root)], structure_only=True, workers=0, settle_window=0, ledger=False)
        dt = time.perf_counter() - t
        db.close()
    finally:
        work.analyse = real
    return s.new / dt


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--dir", help="work directory (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the files and the database")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="lorawb-bench-"))
    root, db_path = work / "loras", work / "library.sqlite3"
    for p in work.glob("*.sqlite3*"):
        p.unlink()
    try:
        t = time.perf_counter()
        if root.exists():
            shutil.rmtree(root)
        build_library(root, args.files)
        apparent = sum(f.stat().st_size for f in root.rglob("*.safetensors"))
        used = sum(f.stat().st_blocks * 512 for f in root.rglob("*.safetensors"))
        print(f"built {args.files} files in {time.perf_counter() - t:.1f} s "
              f"({apparent / 2**30:.0f} GiB apparent, {used / 2**20:.0f} MiB on disk)")
        db = open_library(db_path)
        t = time.perf_counter()
        s = scan(db, [str(root)], structure_only=True, workers=args.workers, settle_window=0)
        dt = time.perf_counter() - t
        assert s.new == args.files and not s.errors, (s.new, s.errors[:3])
        print(f"structure phase: {args.files} files in {dt:.2f} s = {args.files / dt:,.0f} files/s "
              f"(workers={args.workers}; goal >= 2,000/s)")
        costs = analysis_cost(root)
        print("  header analysis per file (1 process, best of 3): summarize_structure (the scanner's) "
              + ", ".join(f"{base} {ms:.2f} ms" for base, (ms, _) in costs.items())
              + "; full inspect_structure " + ", ".join(f"{base} {ms:.1f} ms" for base, (_, ms) in costs.items()))
        print(f"  scanner without header analysis: {scanner_overhead(root, work / 'overhead.sqlite3'):,.0f} files/s "
              "(listing, planning, IDs, batched writes, FTS)")
        t = time.perf_counter()
        s = scan(db, [str(root)], structure_only=True, workers=args.workers, settle_window=0)
        dt = time.perf_counter() - t
        assert s.unchanged == args.files, s
        print(f"unchanged rescan: {args.files} files in {dt * 1000:.0f} ms (goal < 1 s)")
        fill_rows(db, args.rows)
        total = db["loras"].count
        search_latencies(db, 20)  # warm the page cache
        lat = search_latencies(db, args.queries)
        print(f"search over {total:,} rows, {len(lat)} queries: p50 {pct(lat, 50) * 1000:.1f} ms, "
              f"p95 {pct(lat, 95) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms (goal p95 < 20 ms); "
              f"mean {statistics.mean(lat) * 1000:.1f} ms")
        db.close()
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep:
            print(f"kept {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
