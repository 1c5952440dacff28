"""``lorawb`` command line: a thin layer over the core API.

Exit codes: 0 all good, 1 some files failed (each with its reason), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from .errors import LorawbError
from .torch_check import INSTALL_TORCH, require_torch, torch_available

LORA_SUFFIXES = {".safetensors"}
REFUSED_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}
BAR_WIDTH = 40


class Output:
    """One sink for everything the CLI prints: human text to stdout, diagnostics to stderr."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None):
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def error(self, text: str) -> None:
        self.err.write(text + "\n")

    def json(self, data: object) -> None:
        self.out.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def iter_lora_paths(paths: Iterable[str]) -> Iterable[Path]:
    """Files named on the command line, and LoRA-like files below named folders (sorted, symlink loops safe)."""
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            seen: set[tuple[int, int]] = set()
            for root, dirs, files in os.walk(p, followlinks=True):
                st = os.stat(root)
                if (st.st_dev, st.st_ino) in seen:
                    dirs[:] = []
                    continue
                seen.add((st.st_dev, st.st_ino))
                dirs.sort()
                for name in sorted(files):
                    if Path(name).suffix.lower() in LORA_SUFFIXES | REFUSED_SUFFIXES:
                        yield Path(root) / name
        else:
            yield p


def _bar(share: float, peak: float) -> str:
    if peak <= 0:
        return ""
    cells = share / peak * BAR_WIDTH
    full = int(cells)
    frac = " ▏▎▍▌▋▊▉"[int((cells - full) * 8)] if full < BAR_WIDTH else ""
    return ("█" * full + frac).rstrip()


def render_report(report, out: Output, *, blocks: bool) -> None:
    fam = report.family
    variant = f" ({fam.variant})" if fam.variant else ""
    out.line(f"{report.path}")
    out.line(f"  family     {fam.family}{variant}  [{fam.confidence}]  " + "; ".join(fam.evidence or [fam.reason or ""]))
    for c in fam.conflicts:
        out.line(f"  conflict   {c}")
    algos = ", ".join(f"{k} ×{v}" for k, v in report.algorithms.items()) or "-"
    out.line(f"  format     {report.format}   algorithms {algos}   modules {len(report.modules)}")
    alpha = f"{report.alpha:g}" if report.alpha is not None else "none (scale 1)"
    ranks = ", ".join(str(r) for r in report.ranks) or "-"
    out.line(f"  layout     {report.layout_id or '-'}   rank {ranks}   alpha {alpha}")
    if report.trigger_words:
        out.line(f"  triggers   {', '.join(report.trigger_words[:8])}")
    if report.metadata.title:
        out.line(f"  title      {report.metadata.title}")
    if report.unmapped:
        out.line(f"  unmapped   {len(report.unmapped)} module(s): {', '.join(report.unmapped[:4])}"
                 + (" …" if len(report.unmapped) > 4 else ""))
    if report.unknown_keys:
        out.line(f"  unknown    {len(report.unknown_keys)} key(s): {', '.join(report.unknown_keys[:4])}"
                 + (" …" if len(report.unknown_keys) > 4 else ""))
    if report.hashes:
        h = report.hashes
        out.line(f"  hashes     AutoV2 {h.autov2}  AutoV3 {h.autov3}  SHA256 {h.sha256}")
    for p in report.problems:
        out.line(f"  problem    {p}")
    if blocks and report.blocks is not None:
        if report.needs_base:
            out.line("  note       some modules need the base weight: their bars show the adapter-only figure (~)")
        peak = max((b.share for b in report.blocks), default=0.0)
        out.line(f"  blocks     total ‖ΔW‖ {report.total_norm:.4g}" + (
            f"   unmapped ‖ΔW‖ {report.unmapped_norm:.4g}" if report.unmapped_norm else ""))
        for b in report.blocks:
            mark = "~" if not b.exact else " "
            share = f"{b.share * 100:5.1f}%" if b.module_count else "    - "
            out.line(f"    {b.id:>5} {mark}{share} {_bar(b.share, peak)}")
    out.line()


def cmd_inspect(args: argparse.Namespace, out: Output) -> int:
    from .inspection import inspect_file

    if args.blocks:
        require_torch("lorawb inspect --blocks", "without it, leave out --blocks for the header report")
    paths = list(iter_lora_paths(args.paths))
    if not paths:
        out.error("lorawb inspect: no .safetensors files found in the given paths.")
        return 1
    results, failures = [], []
    progress = _progress(len(paths), args.json or len(paths) < 5)
    for path in paths:
        try:
            report = inspect_file(path, blocks=args.blocks, hashes=args.hash)
        except LorawbError as exc:  # unreadable, or readable but not applicable (BrokenLora: NaN/Inf, shapes, …)
            failure = {"path": os.fsdecode(path), "kind": type(exc).__name__, "error": str(exc)}
            broken = getattr(exc, "report", None)
            if broken is not None:
                failure["problems"] = list(broken.problems)
            failures.append(failure)
            if not args.json:
                out.error(f"error: {exc}")
                for p in (broken.problems if broken is not None and len(broken.problems) > 3 else []):
                    out.error(f"  problem    {p}")
        else:
            results.append(report)
            if not args.json:
                render_report(report, out, blocks=args.blocks)
        progress.update(1)
    progress.close()
    if args.json:
        out.json({"schema": 1, "files": [r.to_dict(modules=args.modules) for r in results], "errors": failures})
    elif len(paths) > 1:
        out.line(f"{len(results)} inspected, {len(failures)} failed")
    return 1 if failures else 0


def _progress(total: int, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="file", disable=disable or not sys.stderr.isatty(), file=sys.stderr)


def cmd_layouts(args: argparse.Namespace, out: Output) -> int:
    from .layouts import get_layout, list_layouts

    layouts = [get_layout(args.layout_id)] if args.layout_id else list_layouts()
    if args.json:
        out.json([lay.to_dict() for lay in layouts])
        return 0
    for lay in layouts:
        view = f" (view of {lay.full})" if lay.is_view else ""
        out.line(f"{lay.id:<22} {len(lay.blocks):>3} blocks  {lay.title}{view}")
        if args.layout_id:
            out.line("  " + " ".join(lay.block_ids))
    return 0


def cmd_compose(args: argparse.Namespace, out: Output) -> int:
    """The compose gate on a stack of library LoRAs: ``ID[:STRENGTH][@WEIGHTS]`` entries (weights in any dialect)."""
    from .compose import check_stack
    from .library.db import open_library

    require_torch("lorawb compose", "it reads the tensors of every LoRA in the stack")
    entries = []
    for raw in args.entries:
        spec, _, weights = raw.partition("@")
        sid, _, strength = spec.partition(":")
        try:
            value = float(strength) if strength else 1.0
        except ValueError:
            out.error(f"{raw!r}: the strength after ':' must be a number (e.g. SD1-CHR-001:0.8).")
            return 2
        entries.append({"lora": sid, "strength_model": value, "strength_clip": value,
                        **({"weights": weights} if weights else {})})
    saved = None
    with open_library(args.db) as db:
        verdict = check_stack(db, entries, threshold=args.threshold, directions=not args.no_directions)
        if verdict.ok and args.save_profile:
            from .combined_profile import combined_weights
            from .profiles import create_profile

            saved = create_profile(db, args.save_profile, verdict.layout_id, combined_weights(verdict),
                                   description="combined block weights of " + " ".join(args.entries))
    if args.json:
        out.json({**verdict.to_dict(), **({"saved_profile": saved.to_dict()} if saved else {})})
    else:
        out.line(verdict.text())
        for b in verdict.blocks:
            if b.strength_sum:
                cos = f"  min cosine {b.min_cosine:+.2f}" if b.min_cosine is not None else ""
                out.line(f"    {b.id:>6}  ‖ΣcΔW‖ {b.norm:8.4f}  Σ|c| {b.strength_sum:5.2f}  w {b.weight:5.3f}{cos}")
        if saved:
            out.line(f"saved the combined block weights as profile {saved.label} (id {saved.id})")
        elif args.save_profile:
            out.line("no profile saved: the stack is refused.")
    return 0 if verdict.ok else 1


def cmd_demo(args: argparse.Namespace, out: Output) -> int:
    """The main job on an embedded default: sample library → inspect → index into SQLite → search → check →
    compose. Without PyTorch the header-only parts run and the end says what was skipped."""
    from .library.cli import cmd_check, cmd_index, cmd_search
    from .samples import build_sample_library

    tensors = torch_available()
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    specs = build_sample_library(root)
    out.line(f"sample library: {len(specs)} real-format LoRA files written under {root}")
    out.line()
    rc = cmd_inspect(_args("inspect", root, "--hash", *(["--blocks"] if tensors else [])), out)
    db = args.db or str(root / "library.sqlite3")
    out.line(f"\nindexing into {db}" + ("" if tensors else " (headers only)"))
    rc |= cmd_index(_args("index", root, "--db", db, *([] if tensors else ["--structure-only"])), out)
    out.line("\nsearch 'flux'")
    rc |= cmd_search(_args("search", "flux", "--db", db, "--limit", 20), out)
    out.line("\nlibrary check")
    rc |= cmd_check(_args("check", "--db", db), out)
    if not tensors:
        out.line("\nskipped without PyTorch: block strengths and the library's hashes (inspect --blocks, index "
                 f"phase (b)) and the compose gate; {INSTALL_TORCH}, then run lorawb demo again")
        return rc
    rc |= _demo_compose(db, out)
    return rc


def _demo_compose(db_path: str, out: Output) -> int:
    """Two SD 1.x sample LoRAs through the compose gate (accepted, with the combined graph), then one with an SDXL
    LoRA (refused, with the reason)."""
    from .library.db import open_library

    with open_library(db_path) as db:
        ids = {fam: [r[0] for r in db.execute("SELECT stable_id FROM loras WHERE family = ? AND missing = 0 AND "
                                              "scan_state = 'ready' ORDER BY stable_id", [fam])]
               for fam in ("sd15", "sdxl")}
    if len(ids["sd15"]) < 2 or not ids["sdxl"]:
        return 0
    a, b = ids["sd15"][:2]
    out.line(f"\ncompose {a}:0.8 {b}@OUTD (a stack of two SD 1.x LoRAs, the second with LBW's OUTD weights)")
    rc = cmd_compose(_args("compose", f"{a}:0.8", f"{b}@OUTD", "--db", db_path), out)
    out.line(f"\ncompose {a} {ids['sdxl'][0]} (SD 1.x + SDXL: the gate refuses it)")
    refused = cmd_compose(_args("compose", a, ids["sdxl"][0], "--db", db_path), out)
    return rc | (0 if refused == 1 else 1)


def _args(*argv: object) -> argparse.Namespace:
    """A command's arguments as its own parser reads them (the demo runs the real commands, every default set)."""
    return build_parser().parse_args([str(a) for a in argv])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lorawb", description="LoRA Weights Builder: inspect LoRA files per block.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="identify LoRA files and measure their per-block strength")
    p.add_argument("paths", nargs="+", help=".safetensors files or folders (searched recursively)")
    p.add_argument("--json", action="store_true", help="print the stable JSON report (schema 1, see README)")
    p.add_argument("--hash", action="store_true", help="compute SHA256 / AutoV2 / AutoV3 (reads the whole file)")
    p.add_argument("--blocks", action="store_true", help="read tensors and show per-block strength")
    p.add_argument("--modules", action="store_true", help="with --json: include every module")
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("layouts", help="list the block layouts the registry knows")
    p.add_argument("layout_id", nargs="?", help="show one layout's blocks")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_layouts)
    from .library.cli import register as register_library

    register_library(sub)
    from .profiles.cli import register as register_profiles

    register_profiles(sub)
    from .server.cli import register as register_serve

    register_serve(sub)
    from .diffusers_host.cli import register as register_generate

    register_generate(sub)

    from .merge.cli import register as register_merge

    register_merge(sub)
    from .organize.cli import register as register_organize

    register_organize(sub)
    from .batch.jobs_cli import register as register_jobs

    register_jobs(sub)
    from .batch.cli import register as register_batch

    register_batch(sub)
    p = sub.add_parser("compose", help="check a stack of library LoRAs: the compatibility gate and combined graph")
    p.add_argument("entries", nargs="+", metavar="ID[:STRENGTH][@WEIGHTS]",
                   help="stable IDs, with a strength and block weights in any dialect (e.g. SD1-CHR-001:0.8@OUTD)")
    p.add_argument("--db", help="library database (default: LORAWB_DB, ComfyUI's user dir, or the per-user data dir)")
    p.add_argument("--threshold", type=float, default=2.0, help="warn when a block's Σ|strength·weight| exceeds it")
    p.add_argument("--no-directions", action="store_true", help="skip the block cosines (no tensor reads)")
    p.add_argument("--save-profile", metavar="NAME", help="store the stack's combined block weights (Σ|s|·n·w / "
                                                          "Σ|s|·n per block) as a new profile of its layout")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compose)
    p = sub.add_parser("demo", help="build a sample library of real-format LoRAs and inspect it")
    p.add_argument("--dir", default="demo-library", help="where to write the sample library (default ./demo-library)")
    p.add_argument("--db", help="library database (default: DIR/library.sqlite3)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    out = Output()
    try:
        parser = build_parser()
    except LorawbError as exc:  # e.g. the library's dependencies are too old: say which and how to upgrade
        out.error(f"error: {exc}")
        return 1
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    try:
        return args.func(args, out)
    except LorawbError as exc:
        out.error(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
