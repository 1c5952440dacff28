"""Benchmark: merging three SDXL rank-32 kohya LoRAs into rank 32, ours vs a dense baseline done the kohya way.

Inputs: all 986 modules of a real SDXL kohya key set (UNet attention/MLP + both text encoders,
``lorawb_core.samples.module_shapes("sdxl")``), random factors with a decaying spectrum (σᵢ ∝ 0.85ⁱ), fp16, alpha 16.

* **ours**: ``lorawb_core.merge.merge_loras(rule=RankRule(rank=32))`` on the whole file, in a subprocess (wall time,
  peak RSS from ``getrusage``).
* **baseline** (sd-scripts ``svd_merge_lora.py``): every input loaded whole in fp32, ΔW = Σ ratio·up@down·alpha/dim
  summed densely in fp32 and kept for every module, ``torch.linalg.svd`` per module, then the 0.99-quantile clamp of
  U·S and Vh. It is slow, so it runs on every ``--stride``-th module (a documented subset) in a subprocess; its
  wall time (less the loading of the whole inputs, which the subset pays in full) is scaled to the full set by the
  SVD cost Σ m·n·min(m, n), and its peak RSS is projected by adding the
  fp32 dense ΔWs of the modules it skipped (kohya keeps all of them in ``merged_sd`` before the SVD loop).
* **error over the optimum**: on the subset, ‖ΔW − ΔŴ‖_F/‖ΔW‖_F of each written result (ours read back from the fp16
  file) minus the rank-32 optimum's (from the exact singular values), mean and max over modules.

Run: ``PYTHONPATH=. python bench/bench_merge.py [--stride 50] [--runs 3] [--dir /tmp/bench_merge]`` (best wall time
of ``--runs`` on each side, the largest peak RSS) (stride 50: 20 of the
986 modules; the dense baseline took 20 minutes on them on 2 shared cores).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

RANK, ALPHA, N_LORAS = 32, 16.0, 3
RATIOS = (0.8, 0.6, -0.4)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_inputs(directory: Path) -> list[Path]:
    import numpy as np
    from safetensors.numpy import save_file

    from lorawb_core.samples import module_shapes

    shapes = module_shapes("sdxl", "kohya")
    paths = []
    decay = 0.85 ** np.arange(RANK, dtype=np.float32)
    for i in range(N_LORAS):
        p = directory / f"sdxl_r32_{i}.safetensors"
        paths.append(p)
        if p.exists():
            continue
        rng = np.random.default_rng(100 + i)
        sd = {}
        for key, s in shapes.items():
            up = rng.standard_normal((s.out_features, RANK), dtype=np.float32) * (decay * 0.02 / math.sqrt(RANK))
            down = rng.standard_normal((RANK, s.in_features), dtype=np.float32) / math.sqrt(s.in_features)
            sd[f"{key}.lora_up.weight"] = up.astype(np.float16)
            sd[f"{key}.lora_down.weight"] = down.astype(np.float16)
            sd[f"{key}.alpha"] = np.array(ALPHA, dtype=np.float16)
        save_file(sd, str(p), metadata={"ss_network_dim": str(RANK), "ss_network_alpha": str(ALPHA),
                                        "ss_base_model_version": "sdxl_base_v1-0",
                                        "modelspec.architecture": "stable-diffusion-xl-v1-base/lora"})
    return paths


def subset(keys: list[str], stride: int) -> list[str]:
    return sorted(keys)[::stride]


# ---- children ------------------------------------------------------------------------------------------------
def child_ours(inputs: list[str], out: str) -> dict:
    import torch  # noqa: F401 - imported before the clock starts, as on the baseline's side

    from lorawb_core.merge import MergeInput, RankRule, merge_loras

    t = time.perf_counter()
    rep = merge_loras([MergeInput(p, r) for p, r in zip(inputs, RATIOS, strict=True)], out, rule=RankRule(rank=RANK))
    wall = time.perf_counter() - t
    return {"wall": wall, "rss_mb": _peak_rss_mb(), "modules": len(rep.modules), "report_error": rep.error,
            "report_text": rep.text(blocks=True)}


def child_baseline(inputs: list[str], stride: int) -> dict:
    """sd-scripts svd_merge_lora.py's algorithm on the subset (fp32 dense sum, full SVD, 0.99 clamp)."""
    import torch
    from safetensors.torch import load_file

    t = time.perf_counter()
    load = 0.0  # loading whole files costs the same for the subset as for the full set: it is not scaled
    merged: dict[str, torch.Tensor] = {}
    keys = None
    for path, ratio in zip(inputs, RATIOS, strict=True):
        t_load = time.perf_counter()
        sd = {k: v.float() for k, v in load_file(path).items()}  # kohya: load_state_dict(..., merge_dtype)
        load += time.perf_counter() - t_load
        if keys is None:
            keys = subset([k[:-len(".lora_down.weight")] for k in sd if k.endswith(".lora_down.weight")], stride)
        for key in keys:
            down, up = sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"]
            scale = float(sd[f"{key}.alpha"]) / down.shape[0]
            w = ratio * (up @ down) * scale
            merged[key] = merged[key] + w if key in merged else w
        del sd
    results = {}
    for key, mat in merged.items():
        u, s, vh = torch.linalg.svd(mat)
        u, s, vh = u[:, :RANK], s[:RANK], vh[:RANK, :]
        u = u @ torch.diag(s)
        dist = torch.cat([u.flatten(), vh.flatten()])
        hi = torch.quantile(dist, 0.99) if dist.numel() < 2**24 else dist.abs().max()
        u, vh = u.clamp(-hi, hi), vh.clamp(-hi, hi)
        results[key] = (u.half(), vh.half())
    wall = time.perf_counter() - t
    torch.save({k: (a.contiguous(), b.contiguous()) for k, (a, b) in results.items()}, os.environ["BENCH_BASELINE_OUT"])
    return {"wall": wall, "load": load, "rss_mb": _peak_rss_mb(), "modules": len(results)}


def _best(runs: list[dict]) -> dict:
    """The fastest run, with the largest peak RSS of all runs (memory is not a best-of figure)."""
    best = dict(min(runs, key=lambda r: r["wall"]))
    best["rss_mb"] = max(r["rss_mb"] for r in runs)
    return best


# ---- parent --------------------------------------------------------------------------------------------------
def run_child(kind: str, *args: str, env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, *args]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    if res.returncode:
        raise SystemExit(f"{kind} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def errors(inputs: list[Path], out: Path, baseline_file: Path, keys: list[str]) -> tuple[list, list]:
    """(ours − optimum, baseline − optimum) relative Frobenius errors on ``keys``, float64."""
    import torch
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    sds = [load_file(str(p)) for p in inputs]
    ours = load_file(str(out))
    base = torch.load(baseline_file, weights_only=True)
    d_ours, d_base = [], []
    for key in keys:
        dense = sum(r * (sd[f"{key}.lora_up.weight"].double() @ sd[f"{key}.lora_down.weight"].double())
                    * float(sd[f"{key}.alpha"]) / RANK for sd, r in zip(sds, RATIOS, strict=True))
        s = torch.linalg.svdvals(dense)
        norm = float(s.pow(2).sum().sqrt())
        opt = float(s[RANK:].pow(2).sum().sqrt()) / norm
        a = float(ours[f"{key}.alpha"]) / ours[f"{key}.lora_down.weight"].shape[0]
        mine = ours[f"{key}.lora_up.weight"].double() @ ours[f"{key}.lora_down.weight"].double() * a
        u, vh = base[key]
        d_ours.append(float((dense - mine).norm()) / norm - opt)
        d_base.append(float((dense - u.double() @ vh.double()).norm()) / norm - opt)
    return d_ours, d_base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="/tmp/bench_merge")
    ap.add_argument("--stride", type=int, default=50, help="the baseline runs on every N-th module")
    ap.add_argument("--runs", type=int, default=3, help="runs of each side (best wall time; the largest peak RSS)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    if args.child:
        kind, *params = args.child
        if kind == "ours":
            print(json.dumps(child_ours(params[:-1], params[-1])))
        else:
            print(json.dumps(child_baseline(params[:-1], int(params[-1]))))
        return
    from lorawb_core.samples import module_shapes

    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    inputs = make_inputs(d)
    print(f"inputs: {N_LORAS} × SDXL rank {RANK} ({len(module_shapes('sdxl', 'kohya'))} modules, "
          f"{inputs[0].stat().st_size / 2**20:.0f} MB each) ready in {time.perf_counter() - t:.1f} s")
    out = d / "merged_r32.safetensors"

    def ours_once() -> dict:
        out.unlink(missing_ok=True)  # the merge never overwrites: each run writes it anew
        return run_child("ours", *map(str, inputs), str(out))

    ours = _best([ours_once() for _ in range(args.runs)])
    shapes = module_shapes("sdxl", "kohya")
    keys = subset(list(shapes), args.stride)
    cost = {k: s.out_features * s.in_features * min(s.out_features, s.in_features) for k, s in shapes.items()}
    factor = sum(cost.values()) / sum(cost[k] for k in keys)
    skipped_dense_mb = sum(4 * shapes[k].out_features * shapes[k].in_features for k in shapes if k not in keys) / 2**20
    baseline_file = d / "baseline_subset.pt"
    base = _best([run_child("baseline", *map(str, inputs), str(args.stride),
                            env={"BENCH_BASELINE_OUT": str(baseline_file)}) for _ in range(args.runs)])
    base_wall = base["load"] + (base["wall"] - base["load"]) * factor
    base_rss = base["rss_mb"] + skipped_dense_mb
    d_ours, d_base = errors(inputs, out, baseline_file, keys)
    rows = [
        ("wall time (s)", f"{ours['wall']:.1f}", f"{base_wall:.0f} (load {base['load']:.1f} s + {base['wall'] - base['load']:.1f} s × {factor:.1f})",
         f"{base_wall / ours['wall']:.0f}×"),
        ("peak RSS (MB)", f"{ours['rss_mb']:.0f}", f"{base_rss:.0f} (subset {base['rss_mb']:.0f} + {skipped_dense_mb:.0f})",
         f"1/{base_rss / ours['rss_mb']:.1f}"),
        ("error over optimum, mean", f"{sum(d_ours) / len(d_ours):+.2e}", f"{sum(d_base) / len(d_base):+.2e}", ""),
        ("error over optimum, max", f"{max(d_ours):+.2e}", f"{max(d_base):+.2e}", ""),
    ]
    print(f"\nbaseline subset: every {args.stride}th module ({len(keys)} of {len(shapes)}); wall scaled by "
          "Σ m·n·min(m,n) (loading not scaled), RSS projected with the skipped modules' fp32 dense ΔW")
    print(f"{'':28} {'ours (full merge)':>20} {'kohya-style dense baseline':>40} {'ratio':>8}")
    for name, a, b, r in rows:
        print(f"{name:28} {a:>20} {b:>40} {r:>8}")
    print(f"\nCPU threads: {os.cpu_count()}; torch {__import__('torch').__version__}\n")
    print(ours["report_text"])


if __name__ == "__main__":
    main()
