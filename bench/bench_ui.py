"""Web UI benchmark, in one run:

1. the search route (``GET /lorawb/loras``, with sparklines, through ``lorawb serve`` over a kept-alive HTTP
   connection) at 100,000 rows: p50/p95 over a mix of word queries, typed prefixes, filters, sorts and pages
   (goal p95 < 20 ms);
2. the panel's first paint with 10,000 LoRAs in headless Chromium (Debian's ``/usr/bin/chromium`` through
   Playwright): navigation start → the first real rows drawn (the panel's ``lorawb:first-rows`` mark; goal
   < 500 ms), with the browser's first contentful paint beside it;
3. how many row elements the list keeps in the DOM at the top, the middle and the end of 10,000 rows (bounded:
   only the visible rows and a small overscan).

    python bench/bench_ui.py [--rows 100000] [--panel-rows 10000] [--queries 400] [--loads 5] [--dir DIR]

The library: the sample library (25 real-format LoRA files, every family, scanned and measured for real), then
synthetic rows copied from those (new names, paths and IDs; 70 % keep their measured blocks, so sparklines are
served) up to the row counts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lorawb_core.library import open_library, scan  # noqa: E402
from lorawb_core.samples import build_sample_library  # noqa: E402

WORDS = ["anime", "girl", "style", "realistic", "portrait", "pony", "detail", "tweaker", "pixel", "art", "ink",
         "watercolor", "armor", "dress", "kimono", "cyberpunk", "fantasy", "landscape", "castle", "neon", "film",
         "grain", "lighting", "hands", "eyes", "hair", "robot", "mecha", "cat", "dog", "sketch", "comic", "oil"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[1]


def base_library(work: Path) -> Path:
    """The sample library, indexed and measured, in ``work/base.sqlite3``."""
    lib, db_path = work / "lib", work / "base.sqlite3"
    build_sample_library(lib)
    db = open_library(db_path)
    scan(db, [str(lib)], workers=0, settle_window=0, ledger=False)
    db.close()
    return db_path


def grow(base: Path, target: Path, rows: int, seed: int = 1, missing: float = 0.03) -> None:
    """Copy ``base`` to ``target`` and add synthetic rows (with their block rows) up to ``rows``; a share
    ``missing`` of them is marked missing (not listed by default)."""
    src, dst = sqlite3.connect(base), sqlite3.connect(target)
    src.backup(dst)
    src.close()
    rng = random.Random(seed)
    cols = [r[1] for r in dst.execute("PRAGMA table_xinfo(loras)") if r[1] not in ("id", "facets")]
    real = [dict(zip(["id", *cols], r, strict=True)) for r in dst.execute(f"SELECT id, {', '.join(cols)} FROM loras")]
    blocks: dict[int, list[tuple]] = {}
    for row in dst.execute("SELECT lora_id, block_id, position, norm, share, module_count, exact FROM blocks"):
        blocks.setdefault(row[0], []).append(row[1:])
    next_id = dst.execute("SELECT max(id) FROM loras").fetchone()[0] + 1
    need = rows - len(real)
    lora_rows, block_rows = [], []
    for i in range(need):
        r = dict(rng.choice(real))
        source = r.pop("id")
        name = " ".join(rng.sample(WORDS, 3)) + f" v{i % 9}"
        ready = rng.random() < 0.7 and source in blocks
        r.update(name=name, sort_key=name.casefold(), path=f"/synthetic/{i}.safetensors", file_name=f"{i}.safetensors",
                 rel_path=f"synthetic/{i}.safetensors", stable_id=f"SYN-{i // 1000:03d}-{i % 1000:03d}",
                 trigger_words=json.dumps([rng.choice(WORDS)]), size=rng.randint(10**6, 10**9),
                 addnet=None, sha256=None, scan_state="ready" if ready else "pending",
                 total_norm=(r["total_norm"] or 1.0) * rng.uniform(0.5, 2) if ready else None,
                 missing=int(rng.random() < missing), first_seen=f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
                                                              "T00:00:00Z")
        lora_rows.append((next_id + i, *(r[c] for c in cols)))
        if ready:
            block_rows.extend((next_id + i, *b) for b in blocks[source])
    dst.executemany(f"INSERT INTO loras (id, {', '.join(cols)}) VALUES ({', '.join('?' * (len(cols) + 1))})",
                    lora_rows)
    dst.executemany("INSERT INTO blocks (lora_id, block_id, position, norm, share, module_count, exact) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", block_rows)
    dst.commit()
    dst.execute("ANALYZE")
    dst.close()


class Server:
    """``lorawb serve --no-scan`` on a free loopback port."""

    def __init__(self, db: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "lorawb_core", "serve", "--db", str(db), "--no-scan",
                                      "--port", str(self.port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/lorawb/info")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("lorawb serve did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


PAGE = 50  # the panel's default page size (setting LoraWB.Library.PageSize)


def queries(n: int, seed: int = 2, *, relevance: bool = False) -> list[str]:
    """Requests as the panel sends them: typed prefixes and words (name order, the panel's default), filters,
    sorts, pages further down. ``relevance``: the same text queries ranked by "Best match" instead."""
    from urllib.parse import urlencode

    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = 1 + i % 2 if relevance else i % 4
        q: dict[str, str | int] = {"limit": PAGE, "offset": rng.choice([0, 0, 0, PAGE, 20 * PAGE]), "sort": "name"}
        if kind == 0:  # browsing: a sort, maybe a filter
            q.update(sort=rng.choice(["name", "added", "size", "strength"]), desc=rng.choice([0, 1]))
            if rng.random() < 0.5:
                q["family"] = rng.choice(["sd15", "sdxl", "flux", "sd3"])
        elif kind == 1:  # typing: a prefix
            q["q"] = rng.choice(WORDS)[:3]
        elif kind == 2:  # words and a filter
            q.update(q=" ".join(rng.sample(WORDS, rng.choice([1, 2]))), layout=rng.choice(["sdxl_unet_12",
                                                                                       "flux_dit_61", "sd15_unet_17"]))
        else:  # state filter, sorted (the panel offers Strength only for measured LoRAs)
            state = rng.choice(["ready", "pending"])
            q.update(state=state, sort=rng.choice(["name", "strength"] if state == "ready" else ["name", "added"]))
        if relevance:
            q["sort"] = "relevance"
        out.append("/lorawb/loras?" + urlencode(q))
    return out


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def timed(conn: http.client.HTTPConnection, paths: list[str]) -> tuple[list[float], int, int]:
    times, items, sparks = [], 0, 0
    for path in paths:
        t = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        times.append(time.perf_counter() - t)
        assert resp.status == 200, body[:200]
        data = json.loads(body)
        items += len(data["items"])
        sparks += sum(1 for i in data["items"] if i["spark"])
    return times, items, sparks


def bench_search(db: Path, n: int) -> None:
    server = Server(db)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        timed(conn, queries(40, seed=9))  # warm the page cache and the connection threads
        conn.request("GET", "/lorawb/info")
        rows = json.loads(conn.getresponse().read())["counts"]["total"]
        paths = queries(n)
        times, items, sparks = timed(conn, paths)
        print(f"search route over {rows:,} rows, {n} requests as the panel sends them (limit {PAGE}, sparklines "
              f"on): p50 {pct(times, 50) * 1000:.1f} ms, p95 {pct(times, 95) * 1000:.1f} ms, "
              f"max {max(times) * 1000:.1f} ms (goal p95 < 20 ms); mean {statistics.mean(times) * 1000:.1f} ms; "
              f"{items / n:.0f} rows and {sparks / n:.0f} sparklines per response")
        kinds = {"browse (sort, half with a family filter)": 0, "typed prefix": 1, "words + layout filter": 2,
                 "state filter": 3}
        print("  by kind: " + "; ".join(
            f"{name} p50 {pct(ts, 50) * 1000:.1f} / p95 {pct(ts, 95) * 1000:.1f} ms"
            for name, k in kinds.items() for ts in [[t for i, t in enumerate(times) if i % 4 == k]]))
        filtered = [t for p, t in zip(paths, times, strict=True) if "family=" in p and "q=" not in p]
        print(f"  family filter without words: p50 {pct(filtered, 50) * 1000:.1f} / p95 {pct(filtered, 95) * 1000:.1f}"
              " ms")
        times, _, _ = timed(conn, queries(n // 4, seed=3, relevance=True))
        print(f"  the same text queries ranked by relevance (\"Best match\", bm25 over every match): "
              f"p50 {pct(times, 50) * 1000:.1f} ms, p95 {pct(times, 95) * 1000:.1f} ms")
        conn.close()
    finally:
        server.stop()


def bench_panel(db: Path, loads: int) -> None:
    if not os.path.exists(CHROMIUM):
        print(f"panel: skipped ({CHROMIUM} is not installed: apt-get install chromium)")
        return
    from playwright.sync_api import sync_playwright

    server = Server(db)
    url = f"http://127.0.0.1:{server.port}/lorawb/ui"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            marks, fcps, counts = [], [], {}
            for i in range(loads + 1):  # the first load warms the browser's and the server's caches
                context = browser.new_context(viewport={"width": 420, "height": 1000}, bypass_csp=True)
                page = context.new_page()
                page.goto(url)
                page.wait_for_function("() => performance.getEntriesByName('lorawb:first-rows').length > 0",
                                       timeout=30_000)
                mark = page.evaluate("() => performance.getEntriesByName('lorawb:first-rows')[0].startTime")
                fcp = page.evaluate("() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime")
                if i:
                    marks.append(mark)
                    fcps.append(fcp or float("nan"))
                if i == loads:
                    page.wait_for_function("() => !document.querySelector('.lwb-row.is-loading')")
                    total = page.evaluate("() => window.lorawb.session.state.total")
                    counts["top"] = page.locator(".lwb-row").count()
                    for where, js in (("middle", "el => { el.scrollTop = el.scrollHeight / 2; }"),
                                      ("end", "el => { el.scrollTop = el.scrollHeight; }")):
                        page.eval_on_selector(".lwb-vlist", js)
                        page.wait_for_timeout(150)
                        page.wait_for_function("() => !document.querySelector('.lwb-row.is-loading')",
                                               timeout=30_000)
                        counts[where] = page.locator(".lwb-row").count()
                    counts["dom"] = page.evaluate("() => document.getElementsByTagName('*').length")
                context.close()
            browser.close()
        print(f"panel first paint with {total:,} LoRAs in Chromium ({loads} loads after a warm-up, 420×1000 "
              f"sidebar): first rows drawn at median {statistics.median(marks):.0f} ms, max {max(marks):.0f} ms "
              f"after navigation start (goal < 500 ms); first contentful paint median {statistics.median(fcps):.0f} ms")
        print(f"row elements in the DOM: {counts['top']} at the top, {counts['middle']} in the middle, "
              f"{counts['end']} at the end of {total:,} rows (bounded: visible rows + overscan); "
              f"{counts['dom']} DOM elements in all")
    finally:
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000, help="rows for the search route (default 100,000)")
    ap.add_argument("--panel-rows", type=int, default=10_000, help="rows for the panel (default 10,000)")
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--loads", type=int, default=5, help="page loads measured (after one warm-up)")
    ap.add_argument("--dir", help="work directory (default: a temporary one, removed after)")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="lorawb-bench-ui-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        base = base_library(work)
        big, panel = work / "big.sqlite3", work / "panel.sqlite3"
        for p in (big, panel):
            p.unlink(missing_ok=True)
        grow(base, big, args.rows)
        grow(base, panel, args.panel_rows, missing=0.0)
        print(f"libraries built in {time.perf_counter() - t:.1f} s ({args.rows:,} and {args.panel_rows:,} rows)")
        bench_search(big, args.queries)
        bench_panel(panel, args.loads)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
