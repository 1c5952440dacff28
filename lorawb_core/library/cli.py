"""Library subcommands of ``lorawb`` (index, reindex, search, show, check, ids): a thin layer over the library API.

Every command takes ``--db PATH`` (default: ``LORAWB_DB``, ComfyUI's user directory, or the per-user data dir).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import UsageError
from .db import open_library
from .search import SORTS


class _Bars:
    """tqdm bars, one per scan phase, fed by the scanner's progress callback."""

    LABELS = {"walk": "listing", "structure": "headers", "tensors": "blocks+hashes"}

    def __init__(self, disable: bool) -> None:
        self.disable = disable or not sys.stderr.isatty()
        self.bar = None
        self.phase = None

    def __call__(self, p) -> None:
        from tqdm import tqdm

        if self.disable:
            return
        if p.phase != self.phase:
            self.close()
            self.phase = p.phase
            self.bar = tqdm(total=p.total, unit="file", desc=self.LABELS.get(p.phase, p.phase), file=sys.stderr)
        self.bar.n = p.done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _print_summary(s, out) -> None:
    for root in s.unavailable_roots:
        out.line(f"root not available: {root} (its LoRAs are marked missing, not deleted)")
    out.line(f"{s.files} files: {s.new} new, {s.changed} changed, {s.moved} moved, {s.restored} back, "
             f"{s.unchanged} unchanged; {s.vanished} marked missing")
    out.line(f"blocks+hashes: {s.measured} measured, {s.pending} pending"
             + (f", {s.merged} matched to missing LoRAs" if s.merged else "")
             + (f", {s.reclaimed} IDs from ledgers" if s.reclaimed else ""))
    if s.duplicates:
        out.line(f"{s.duplicates} groups of content duplicates (lorawb search --duplicates)")
    if s.unstable or s.partial:
        out.line(f"skipped until stable: {len(s.unstable) + len(s.partial)} file(s) still being written")
    for w in s.warnings:
        out.error(f"warning: {w}")
    for e in s.errors:
        out.error(f"unreadable: {e.reason}" if e.item in e.reason else f"unreadable: {e.item}: {e.reason}")
    if s.cancelled:
        out.line("stopped early; run the same command again to resume")
    out.line(f"done in {s.seconds:.1f} s")


def cmd_index(args: argparse.Namespace, out) -> int:
    from .config import load_config, resolve_roots
    from .scan import scan

    config = load_config()
    roots = resolve_roots(args.roots, config)
    bars = _Bars(args.json)
    with open_library(args.db) as db:
        try:
            summary = scan(db, roots, full=args.full, structure_only=args.structure_only, workers=args.workers,
                           progress=bars, categories=config.categories, ledger=config.ledger)
        finally:
            bars.close()
    if args.json:
        from dataclasses import asdict

        out.json(asdict(summary))
    else:
        _print_summary(summary, out)
    return 1 if summary.errors else 0


def cmd_reindex(args: argparse.Namespace, out) -> int:
    from .config import load_config
    from .scan import reindex
    from .search import get_lora

    config = load_config()
    with open_library(args.db) as db:
        summary = reindex(db, args.stable_id, structure_only=args.structure_only, categories=config.categories,
                          ledger=config.ledger)
        for w in summary.warnings:
            out.error(f"warning: {w}")
        entry = get_lora(db, args.stable_id)
    _render_entry(entry, out)
    return 1 if summary.errors else 0


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_search(args: argparse.Namespace, out) -> int:
    from .search import SearchQuery, search

    missing = {"present": False, "missing": True, "all": None}[args.show]
    q = SearchQuery(text=" ".join(args.query), family=args.family, variant=args.variant, layout=args.layout,
                    format=args.format, algorithm=args.algorithm, state=args.state, category=args.category,
                    missing=missing, duplicates=args.duplicates, sort=args.sort, descending=args.desc,
                    limit=args.limit, offset=(args.page - 1) * args.limit)
    with open_library(args.db) as db:
        page = search(db, q)
    if args.json:
        out.json({"schema": 1, "total": page.total, "offset": page.offset, "limit": page.limit,
                  "items": [e.to_dict() for e in page.items]})
        return 0
    for e in page.items:
        state = "missing" if e.missing else e.scan_state
        strength = f"{e.total_norm:7.3f}" if e.total_norm is not None else "      -"
        out.line(f"{e.stable_id or '-':<12} {e.family or '-':<13} {e.layout_id or '-':<21} {state:<8} {strength} "
                 f"{_size(e.size):>9}  {e.name}")
    last = page.offset + len(page.items)
    out.line(f"{page.offset + 1 if page.items else 0}-{last} of {page.total}"
             + (f" (next: --page {args.page + 1})" if page.has_more else ""))
    return 0


def _render_entry(e, out) -> None:
    out.line(f"{e.stable_id or '(no ID: unreadable)'}  {e.name}")
    out.line(f"  path       {e.path}" + ("   [MISSING]" if e.missing else ""))
    variant = f" ({e.variant})" if e.variant else ""
    out.line(f"  family     {e.family or '-'}{variant}  [{e.confidence or '-'}]")
    out.line(f"  format     {e.format or '-'}   algorithm {e.algorithm or '-'}   modules {e.module_count or 0}")
    alpha = f"{e.alpha:g}" if e.alpha is not None else "-"
    out.line(f"  layout     {e.layout_id or '-'}   rank {e.rank or '-'}   alpha {alpha}   size {_size(e.size)}")
    if e.trigger_words:
        out.line(f"  triggers   {', '.join(e.trigger_words[:8])}")
    if e.title or e.author:
        out.line(f"  title      {e.title or '-'}   author {e.author or '-'}")
    if e.autov3:
        out.line(f"  hashes     AutoV2 {e.autov2}  AutoV3 {e.autov3}  SHA256 {e.sha256}")
    out.line(f"  added      {e.first_seen}   last seen {e.last_seen}")
    if e.error:
        out.line(f"  error      {e.error}")
    for p in e.problems:
        out.line(f"  problem    {p}")
    for d in e.duplicates:
        out.line(f"  duplicate  {d}")
    if e.blocks is None:
        out.line(f"  blocks     {e.blocks_state}" + (" (not measured yet: run lorawb index)"
                                                     if e.blocks_state == "pending" else ""))
        return
    peak = max((b.share or 0.0 for b in e.blocks), default=0.0)
    out.line(f"  blocks     total ‖ΔW‖ {e.total_norm:.4g}" if e.total_norm is not None else "  blocks")
    for b in e.blocks:
        share = f"{(b.share or 0) * 100:5.1f}%" if b.module_count else "    - "
        bar = "█" * round((b.share or 0) / peak * 40) if peak > 0 else ""
        out.line(f"    {b.block_id:>5} {' ' if b.exact else '~'}{share} {bar}")


def cmd_show(args: argparse.Namespace, out) -> int:
    from .search import get_lora

    with open_library(args.db) as db:
        entry = get_lora(db, args.stable_id)
    if args.json:
        out.json({"schema": 1, **entry.to_dict()})
    else:
        _render_entry(entry, out)
    return 0


def cmd_check(args: argparse.Namespace, out) -> int:
    from .check import run_checks

    with open_library(args.db) as db:
        results = run_checks(db, paths=not args.no_paths)
    for r in results:
        out.line(r.line())
    failed = [r for r in results if not r.ok]
    out.line(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def cmd_ids(args: argparse.Namespace, out) -> int:
    from .stable_ids import export_ids, import_ids

    with open_library(args.db) as db:
        if args.action == "export":
            data = export_ids(db)
            if args.file in (None, "-"):
                out.json(data)
            else:
                Path(args.file).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
                out.line(f"{len(data['ids'])} stable IDs written to {args.file}")
            return 0
        if not args.file:
            raise UsageError("lorawb ids import needs the file written by `lorawb ids export`.")
        try:
            data = json.loads(Path(args.file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{args.file}: cannot read the ID export ({exc}).") from None
        result = import_ids(db, data, source=args.file)
    out.line(f"{result.renamed} LoRAs took their imported ID, {result.stored} IDs kept for files not indexed yet, "
             f"{result.unchanged} already in place")
    for c in result.conflicts:
        out.error(f"conflict: {c}")
    return 1 if result.conflicts else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the library subcommands to the ``lorawb`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", help="library database (default: LORAWB_DB, ComfyUI's user dir or the user data dir)")

    p = sub.add_parser("index", parents=[common], help="index LoRA folders into the library (both scan phases)")
    p.add_argument("roots", nargs="*", metavar="ROOT", help="LoRA folders (default: config file, else ComfyUI's)")
    p.add_argument("--full", action="store_true", help="re-read and re-measure every file, not only changed ones")
    p.add_argument("--structure-only", action="store_true", help="phase (a) only: headers, no tensors or hashes")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: automatic, 0 = inline)")
    p.add_argument("--json", action="store_true", help="print the scan summary as JSON")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("reindex", parents=[common], help="read one LoRA again, whatever its state")
    p.add_argument("stable_id")
    p.add_argument("--structure-only", action="store_true")
    p.set_defaults(func=cmd_reindex)

    p = sub.add_parser("search", parents=[common], help="search the library (words match name, file name, "
                                                         "trigger words, tags, title, author)")
    p.add_argument("query", nargs="*", help="words (each matches as a prefix); none lists everything")
    for name in ("family", "variant", "layout", "format", "algorithm", "state", "category"):
        p.add_argument(f"--{name}")
    p.add_argument("--show", choices=("present", "missing", "all"), default="present",
                   help="present files (default), missing ones, or both")
    p.add_argument("--duplicates", action="store_true", help="only files whose content another file shares")
    p.add_argument("--sort", choices=(*SORTS, "relevance"), default=None,
                   help="default: name; relevance (with words) ranks by FTS5 bm25")
    p.add_argument("--desc", action="store_true", help="descending order")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--page", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("show", parents=[common], help="one LoRA by stable ID, with its blocks")
    p.add_argument("stable_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("check", parents=[common], help="verify the library invariants (exit 1 on any FAIL)")
    p.add_argument("--no-paths", action="store_true", help="skip the test that every present file exists")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("ids", parents=[common], help="export or import stable IDs (JSON)")
    p.add_argument("action", choices=("export", "import"))
    p.add_argument("file", nargs="?", help="export: output file (default stdout); import: the exported file")
    p.set_defaults(func=cmd_ids)
