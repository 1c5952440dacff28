"""Benchmark: sampling with a two-keyframe Block Schedule vs the same weights through Block Weight Apply.

    COMFYUI_DIR=/path/to/ComfyUI python bench/bench_schedule.py [--runs 5] [--steps 20] [--size 16] [--threads 1]

Uses a current ComfyUI (hooks are needed: ``COMFYUI_DIR``) in this process, the SD1.5-architecture model at 1/10
width from the tests (same module and key count as a real SD1.5) and a kohya LoRA for it written by diffusers + peft.
Both sides sample ``--steps`` steps (euler, simple, cfg 4) of a ``--size``² latent; the schedule turns IN04-OUT05 off
at 50 % (two keyframes), the rest acts over the whole run — the same weights as the Block Weight Apply side. Sides
interleaved round by round, best and median of ``--runs``. Goal: scheduled / Block Weight Apply ≤ 1.3×. Also the
hook setup time (Block Schedule + Apply Hooks to Conditioning, warm cache), and a per-step ramp (IN04-OUT05 from 0.2
to 1 over the run with ``steps`` given: one keyframe per step, so the hook's weights change at every step).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "tests"))
WEIGHTS = "IN04-OUT05=0.5, default=1"
SCHEDULE = "IN04-OUT05=0.5@0-50%, default=1"
RAMP = "IN04-OUT05=0.2~1@0-100%, default=1"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=16, help="latent width/height")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from comfy_host import Comfy, comfyui_dir, write_tiny_sd15_lora

    path, why = comfyui_dir()
    if path is None or not (path / "comfy" / "hooks.py").is_file():
        sys.exit(f"bench_schedule needs a ComfyUI with hooks (set COMFYUI_DIR): {why or f'{path} has none'}")
    work = Path(tempfile.mkdtemp(prefix="lorawb-bench-schedule-"))
    os.environ["LORAWB_DB"] = str(work / "lorawb.sqlite3")
    os.environ["LORAWB_CONFIG"] = str(work / "no-config.json")
    loras = work / "models" / "loras"
    loras.mkdir(parents=True)
    write_tiny_sd15_lora(loras / "bench.safetensors", rank=16, seed=1)
    comfy = Comfy(path, work)
    svc = comfy.pack.service()
    svc.wait(120)
    svc.start_scan()
    svc.wait(120)
    import comfy.sample as sampling

    from lorawb_core.refs import lora_choices

    label = comfy.pack.with_db(lora_choices)[0]
    model, _ = comfy.tiny_sd15()
    gen = torch.Generator().manual_seed(3)
    pos, neg = [[torch.randn(1, 77, 64, generator=gen), {}]], [[torch.randn(1, 77, 64, generator=gen), {}]]
    latent = torch.zeros(1, 4, args.size, args.size)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(7))
    bwa, bsched, apply_hooks = (comfy.node(n)() for n in ("LoraWB_BlockWeightApply", "LoraWB_BlockSchedule",
                                                          "LoraWB_ApplyHooksToConditioning"))

    def setup_hooks(text=SCHEDULE):
        hooks = bsched.schedule(lora=label, weights_text=text, strength_model=0.8, strength_clip=1.0,
                                steps=args.steps)["result"][0]
        return apply_hooks.apply(positive=pos, negative=neg, hooks=hooks)

    def run_sampler(m, p, n):
        with torch.no_grad():
            sampling.sample(m, noise, args.steps, 4.0, "euler", "simple", p, n, latent, seed=7, disable_pbar=True)

    applied = bwa.apply(model=model, lora=label, weights_text=WEIGHTS, strength_model=0.8,
                        strength_clip=1.0)["result"][0]
    hooked_pos, hooked_neg = setup_hooks()
    run_sampler(applied, pos, neg)  # warm-up of both paths
    run_sampler(model, hooked_pos, hooked_neg)
    run_sampler(model, *setup_hooks(RAMP))
    times: dict[str, list[float]] = {"apply": [], "schedule": [], "setup": [], "ramp": []}
    for _ in range(args.runs):
        t0 = time.perf_counter()
        run_sampler(applied, pos, neg)
        t1 = time.perf_counter()
        hooked_pos, hooked_neg = setup_hooks()
        t2 = time.perf_counter()
        run_sampler(model, hooked_pos, hooked_neg)
        t3 = time.perf_counter()
        ramp_pos, ramp_neg = setup_hooks(RAMP)
        t4 = time.perf_counter()
        run_sampler(model, ramp_pos, ramp_neg)
        times["ramp"].append(time.perf_counter() - t4)
        times["apply"].append(t1 - t0)
        times["setup"].append(t2 - t1)
        times["schedule"].append(t3 - t2)
    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"ComfyUI {path}: {args.steps} steps, latent {args.size}², {args.threads} torch thread(s), best/median of "
          f"{args.runs} (interleaved)")
    print(f"  Block Weight Apply sampling : {best['apply'] * 1e3:8.1f} ms / {median['apply'] * 1e3:8.1f} ms")
    print(f"  Block Schedule sampling     : {best['schedule'] * 1e3:8.1f} ms / {median['schedule'] * 1e3:8.1f} ms "
          "(two keyframes: IN04-OUT05 off at 50 %)")
    print(f"  ratio schedule / apply      : {best['schedule'] / best['apply']:.2f}× best, "
          f"{median['schedule'] / median['apply']:.2f}× median (goal ≤ 1.3×)")
    print(f"  hook setup (node + conds)   : {best['setup'] * 1e3:8.2f} ms / {median['setup'] * 1e3:8.2f} ms")
    print(f"  ramp sampling               : {best['ramp'] * 1e3:8.1f} ms / {median['ramp'] * 1e3:8.1f} ms "
          f"(IN04-OUT05 0.2~1 over {args.steps} steps: a keyframe per step)")
    print(f"  ratio ramp / apply          : {best['ramp'] / best['apply']:.2f}× best, "
          f"{median['ramp'] / median['apply']:.2f}× median")


if __name__ == "__main__":
    main()
