"""Library indexing benchmark: structure-phase rate on a realistic mix and on repeated layouts, unchanged rescan,
search latency.

    python bench/bench_index.py [--files 10000] [--layouts 1000] [--repeat 3] [--rows 100000] [--workers 2]
                                [--dir DIR] [--keep] [--profile N]

Builds two libraries of N LoRA files each with the real key sets and shapes of real LoRAs and per-file kohya
metadata. Each header is written for real; the tensor data is a sparse hole (``truncate``), so 10,000 files take a
few GB of disk (their headers: an SDXL LoRA with both text encoders has ~3,000 tensors) instead of ~900 GB.

* the realistic mix: ``--layouts`` distinct tensor indexes (default 1,000, the floor issue 8 set for a realistic
  mix: 10 files per index; ``--layouts 2000`` is a harsher one; bench/layout_mix.py: 7 families in 11
  naming styles, module subsets, ranks 2-128, LoRA/LoCon/LoHa/DoRA, F16/BF16/F32, alpha or not), each file on a
  random one, metadata of 0.1-100 KB (tag frequencies of 3 to 3,000 tags);
* repeated layouts (the old mode): SD1.5, SDXL and Flux kohya files over 16 distinct indexes, small metadata — where
  the per-index caches hit for > 99.8 % of the files.

Then, in one run:

1. structure phase (``lorawb index --structure-only``) over all N files, fresh database, best of ``--repeat`` on each
   library: files/s (goal ≥ 2,000/s on the realistic mix);
2. an unchanged rescan of the realistic library (goal < 1 s);
3. search latency p50/p95 over 100,000 rows (the N real rows plus synthetic ones), for a mix of word queries,
   filters, sorts and pages (goal p95 < 20 ms).

It also prints where the structure phase spends its time: ``summarize_structure`` (the scanner's header analysis)
and the full ``inspect_structure`` per file by family (one process, structure caches warm, repeated layouts), the
scanner's own rate with header analysis replaced by a canned result, and with ``--profile N`` a cProfile of the
structure phase in one process over the first N files of the realistic mix (top functions by own time).
"""

from __future__ import annotations

import argparse
import json
import os
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from layout_mix import DTYPE_BYTES, kohya_metadata, varied_layouts  # noqa: E402

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


def _index(tensors, dtype: str = "F16") -> tuple[dict, int]:
    header, offset = {}, 0
    for key, shape in tensors:
        n = DTYPE_BYTES[dtype]
        for d in shape:
            n *= d
        header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    return header, offset


def write_sparse_lora(path: Path, index: dict, data_bytes: int, metadata: dict[str, str]) -> None:
    """A safetensors file whose header is real (``__metadata__`` first, as the safetensors library writes it) and
    whose data region is a hole (reads as zeros)."""
    header = {"__metadata__": metadata, **index}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(len(blob).to_bytes(8, "little"))
        fh.write(blob)
        fh.truncate(8 + len(blob) + data_bytes)


def build_library(root: Path, n: int, seed: int = 0) -> int:
    """Repeated layouts: every file on one of 16 structures (SD1.5/SDXL/Flux kohya); returns that count."""
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
    return len(structures)


def build_varied_library(root: Path, n: int, layouts: int, seed: int = 0) -> int:
    """The realistic mix: ``layouts`` distinct structures (bench/layout_mix.py), each file on a random one, metadata
    of varied size; returns the number of distinct indexes the files use."""
    rng = random.Random(seed)
    pool = varied_layouts(layouts, seed)
    used = set()
    indexes: dict[int, tuple[dict, int]] = {}
    for i in range(n):
        j = i if i < len(pool) else rng.randrange(len(pool))  # every layout at least once, then at random
        used.add(j)
        _family, base, dtype, rank, tensors = pool[j]
        if j not in indexes:
            indexes[j] = _index(tensors, dtype)
        index, data = indexes[j]
        name = "_".join(rng.sample(WORDS, 2)) + f"_{i:05d}"
        folder = root / FOLDERS[i % len(FOLDERS)]
        folder.mkdir(parents=True, exist_ok=True)
        write_sparse_lora(folder / f"{name}.safetensors", index, data, kohya_metadata(rng, name, base, rank, WORDS, i))
    return len(used)


def structure_rate(root: Path, db_path: Path, files: int, workers: int, repeat: int) -> tuple[float, float]:
    """(best files/s, median files/s) of the structure phase over ``root`` into a fresh database, ``repeat`` times
    (each scan starts its worker processes anew: no per-index cache survives from one run to the next). Files the
    scanner refuses are printed (every file written here is a valid safetensors file)."""
    rates, refused = [], []
    for _ in range(repeat):
        for p in db_path.parent.glob(db_path.name + "*"):
            p.unlink()
        db = open_library(db_path)
        t = time.perf_counter()
        s = scan(db, [str(root)], structure_only=True, workers=workers, settle_window=0, ledger=False)
        dt = time.perf_counter() - t
        db.close()
        assert s.new == files, (s.new, s.errors[:3])
        refused = s.errors
        rates.append(files / dt)
    if refused:
        print(f"  !! {len(refused)} valid files refused by the scanner, e.g. {refused[0].reason}")
    return max(rates), statistics.median(rates)


def profile_structure(root: Path, db_path: Path, limit: int, top: int = 18) -> None:
    """cProfile of the structure phase in this process (workers=0) over ``limit`` files of ``root``."""
    import cProfile
    import pstats

    sub = root.parent / "profiled"
    if sub.exists():
        shutil.rmtree(sub)
    sub.mkdir()
    for i, p in enumerate(sorted(root.rglob("*.safetensors"))[:limit]):
        (sub / f"{i:05d}_{p.name}").symlink_to(p)
    db = open_library(db_path)
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    s = scan(db, [str(sub)], structure_only=True, workers=0, settle_window=0, ledger=False)
    prof.disable()
    dt = time.perf_counter() - t
    db.close()
    print(f"  profile: {s.new} files of the realistic mix in one process, {s.new / dt:,.0f} files/s under cProfile; "
          f"top {top} by own time:")
    stats = pstats.Stats(prof)
    total = stats.total_tt
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    for (file, line, fn), (_cc, calls, tt, ct, _callers) in rows:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else file
        print(f"    {tt / total * 100:5.1f} % own, {ct:6.2f} s cum, {calls:>8} calls  {fn}  ({where})")


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
    triggers): ``file_tasks.analyse`` is replaced by a canned copy of one real analysis."""
    import lorawb_core.file_tasks as file_tasks

    real = file_tasks.analyse
    canned: dict[str, dict] = {}

    def canned_analyse(job):
        if "row" not in canned:
            canned["row"] = real(job)
        name = Path(job[0]).stem
        return {**canned["row"], "name": name, "sort_key": name.casefold(), "size": job[1], "mtime_ns": job[2]}

    file_tasks.analyse = canned_analyse
    try:
        db = open_library(db_path)
        t = time.perf_counter()
        s = scan(db, [str(root)], structure_only=True, workers=0, settle_window=0, ledger=False)
        dt = time.perf_counter() - t
        db.close()
    finally:
        file_tasks.analyse = real
    return s.new / dt


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def _built(root: Path) -> str:
    files = list(root.rglob("*.safetensors"))
    apparent = sum(f.stat().st_size for f in files)
    used = sum(f.stat().st_blocks * 512 for f in files)
    return f"{apparent / 2**30:.0f} GiB apparent, {used / 2**20:.0f} MiB on disk"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--layouts", type=int, default=1_000,
                    help="distinct tensor indexes of the realistic mix (1,000: 10 files per index; 2,000 is harsher)")
    ap.add_argument("--repeat", type=int, default=3, help="structure-phase runs per library (best of)")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="profile the structure phase on N files")
    ap.add_argument("--dir", help="work directory (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the files and the database")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="lorawb-bench-"))
    root, repeated, db_path = work / "loras", work / "repeated", work / "library.sqlite3"
    for p in work.glob("*.sqlite3*"):
        p.unlink()
    try:
        for r in (root, repeated):
            if r.exists():
                shutil.rmtree(r)
        t = time.perf_counter()
        distinct = build_varied_library(root, args.files, args.layouts)
        print(f"built {args.files} files of the realistic mix ({distinct:,} distinct tensor indexes) in "
              f"{time.perf_counter() - t:.1f} s ({_built(root)})")
        t = time.perf_counter()
        few = build_library(repeated, args.files)
        print(f"built {args.files} files on repeated layouts ({few} distinct tensor indexes) in "
              f"{time.perf_counter() - t:.1f} s ({_built(repeated)})")
        if hasattr(os, "sync"):
            os.sync()  # the kernel writes the files just built back now, not during the measured scans
        best, med = structure_rate(root, db_path, args.files, args.workers, args.repeat)
        best_r, med_r = structure_rate(repeated, work / "repeated.sqlite3", args.files, args.workers, args.repeat)
        print(f"structure phase, realistic mix ({distinct:,} layouts): {best:,.0f} files/s best of {args.repeat} "
              f"(median {med:,.0f}; workers={args.workers}; goal >= 2,000/s)")
        print(f"structure phase, repeated layouts ({few} layouts):   {best_r:,.0f} files/s best of {args.repeat} "
              f"(median {med_r:,.0f}) → the realistic mix runs at {best / best_r:.2f}× the repeated-layout rate")
        costs = analysis_cost(repeated)
        print("  header analysis per file on repeated layouts (1 process, best of 3): summarize_structure (the "
              "scanner's) " + ", ".join(f"{base} {ms:.2f} ms" for base, (ms, _) in costs.items())
              + "; full inspect_structure " + ", ".join(f"{base} {ms:.1f} ms" for base, (_, ms) in costs.items()))
        print(f"  scanner without header analysis: {scanner_overhead(root, work / 'overhead.sqlite3'):,.0f} files/s "
              "(listing, planning, IDs, batched writes, FTS)")
        if args.profile:
            profile_structure(root, work / "profile.sqlite3", args.profile)
        db = open_library(db_path)  # the realistic library as the last structure run left it
        t = time.perf_counter()
        s = scan(db, [str(root)], structure_only=True, workers=args.workers, settle_window=0, ledger=False)
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
