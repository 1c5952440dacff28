"""Benchmark: the diffusers host's apply + unload with per-block weights vs diffusers' own load_lora_weights +
set_adapters + unload_lora_weights (uniform), and a cached second apply vs the first — in one run.

    python bench/bench_diffusers.py [--runs 15] [--rank 16] [--family sd15|sdxl|flux]

Same tiny pipeline for both (built from a config: ``tests/diffusers_tiny.py``), a LoRA written by peft + diffusers
for it (UNet/transformer and text encoder). Best of ``--runs`` (median in brackets). Goal: ours ≤ 1.2× diffusers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tests"))
sys.path.append(str(ROOT / "bench"))

from timing import best  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--family", default="sd15", choices=["sd15", "sdxl", "flux"])
    args = ap.parse_args()

    from diffusers.utils import logging as dlog
    from diffusers_tiny import BUILDERS, write_lora
    from transformers.utils import logging as tlog

    from lorawb_core.cache import LoraCache
    from lorawb_core.diffusers_host import DiffusersHost, LoraSpec
    from lorawb_core.diffusers_host import host as host_module

    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    profile = {"sd15": "OUTD", "sdxl": "OUTD", "flux": "DOUBLE"}[args.family]
    with tempfile.TemporaryDirectory() as tmp:
        path = str(write_lora(args.family, tmp, "bench", rank=args.rank, seed=1))
        pipe = BUILDERS[args.family]()
        host = DiffusersHost(pipe, cache=LoraCache(256 << 20))
        n_modules = len(host_module.module_facts(__import__("lorawb_core.inspection", fromlist=["x"])
                                                 .inspect_structure(path)))

        def theirs():
            pipe.load_lora_weights(path, adapter_name="theirs")
            pipe.set_adapters(["theirs"], adapter_weights=[0.8])
            pipe.unload_lora_weights()

        def ours(weights):
            def run():
                host.apply([LoraSpec(path, 0.8, weights=weights)])
                host.unload()
            return run

        def cold():
            host.cache.clear()
            host._gate_memo.clear()
            host_module._FACTS.clear()
            host.apply([LoraSpec(path, 0.8, weights=profile)])
            host.unload()

        theirs()  # warm-ups: imports, allocator
        ours(profile)()
        t_theirs = best(theirs, args.runs)
        t_ours = best(ours(profile), args.runs)
        t_uniform = best(ours(None), args.runs)
        t_cold = best(cold, max(3, args.runs // 3))
        hit = best(lambda: host.cache.get(path), args.runs)
        host.cache.clear()
        miss = best(lambda: (host.cache.clear(), host.cache.get(path)), args.runs)

    def fmt(t):
        return f"{t[0] * 1000:8.1f} ms  (median {t[1] * 1000:.1f})"

    print(f"tiny {args.family} pipeline, LoRA rank {args.rank}, {n_modules} modules, best of {args.runs}")
    print(f"  diffusers load_lora_weights + set_adapters + unload (uniform) {fmt(t_theirs)}")
    print(f"  lorawb apply + unload, per-block weights ({profile})          {fmt(t_ours)}   ratio "
          f"{t_ours[0] / t_theirs[0]:.2f}x  (goal <= 1.2x)")
    print(f"  lorawb apply + unload, uniform                              {fmt(t_uniform)}   ratio "
          f"{t_uniform[0] / t_theirs[0]:.2f}x")
    print(f"  lorawb first apply (cold cache, gate, header) + unload      {fmt(t_cold)}   second apply is "
          f"{t_cold[0] / t_ours[0]:.2f}x faster")
    print(f"  LoRA cache: hit {hit[0] * 1e6:.1f} us vs load {miss[0] * 1000:.2f} ms")


if __name__ == "__main__":
    main()
