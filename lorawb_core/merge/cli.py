"""``lorawb merge ID_OR_FILE[:S][@WEIGHTS]… --out FILE``: the merge from the command line, with a progress bar."""

from __future__ import annotations

import argparse
import sys

from ..errors import UsageError


def _rule(args: argparse.Namespace):
    from .lowrank import RankRule

    dynamic = [(name, value) for name, value in (("sv_fro", args.sv_fro), ("sv_ratio", args.sv_ratio),
                                                  ("sv_cumulative", args.sv_cumulative)) if value is not None]
    if len(dynamic) > 1:
        raise UsageError("give one dynamic rank method (--sv-fro, --sv-ratio or --sv-cumulative).")
    if args.concat and (args.rank or dynamic or args.conv_rank):
        raise UsageError("--concat keeps every rank: leave out --rank, --conv-rank and the --sv-* options.")
    if dynamic:
        return RankRule(rank=args.rank, conv_rank=args.conv_rank, dynamic=dynamic[0][0], param=dynamic[0][1])
    if not args.concat and not args.rank:
        raise UsageError("choose the rank: --rank R (the best rank-R approximation), --concat (lossless, rank = sum "
                         "of the inputs' ranks) or a dynamic rank (--sv-fro 0.99, --sv-ratio 20).")
    return RankRule(rank=args.rank, conv_rank=args.conv_rank or args.rank) if args.rank else RankRule()


def cmd_merge(args: argparse.Namespace, out) -> int:
    """Merge the stack into a new kohya LoRA file; prints the report (``--json``: the report as JSON)."""
    from ..torch_check import require_torch
    from . import MergeInput, merge_loras

    require_torch("lorawb merge", "it reads and factorises the tensors of every LoRA in the stack")
    rule = _rule(args)
    items = [MergeInput.parse(spec) for spec in args.entries]
    bar = None

    def progress(done: int, total: int, key: str) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="module", desc="merge", file=sys.stderr,
                       disable=args.json or not sys.stderr.isatty())
        bar.update(done - bar.n)

    kwargs = dict(rule=rule, dtype=args.dtype, alpha=args.alpha, metadata=args.metadata, progress=progress,
                  title=args.title, base=args.base)
    try:
        if args.no_library:
            report = merge_loras(items, args.out, **kwargs)
        else:
            from ..library.db import open_library

            with open_library(args.db) as db:
                report = merge_loras(items, args.out, db=db, **kwargs)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        out.json(report.to_dict(modules=args.modules))
    else:
        out.line(report.text())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="merge a stack of LoRAs into one new LoRA file (exact low-rank math)")
    p.add_argument("entries", nargs="+", metavar="ID_OR_FILE[:S][@WEIGHTS]",
                   help="stable IDs or .safetensors paths, each with a strength and block weights in any dialect "
                        "(e.g. SDX-CHR-001:0.8@OUTD, ./style.safetensors:-0.3)")
    p.add_argument("--out", required=True, help="the new .safetensors file (never overwritten)")
    rank = p.add_argument_group("rank (one of)")
    rank.add_argument("--rank", type=int, help="target rank: the best rank-R approximation of the sum (with a "
                                               "dynamic method: the largest rank allowed)")
    rank.add_argument("--concat", action="store_true", help="keep everything: lossless, rank = sum of the ranks")
    rank.add_argument("--sv-fro", type=float, metavar="F", help="dynamic: keep the Frobenius fraction F (e.g. 0.99)")
    rank.add_argument("--sv-ratio", type=float, metavar="N", help="dynamic: keep singular values ≥ σ_max/N")
    rank.add_argument("--sv-cumulative", type=float, metavar="F", help="dynamic: keep the fraction F of Σσ")
    p.add_argument("--base", metavar="MODEL.safetensors",
                   help="bake a single DoRA file into a plain LoRA with this base model (needs --rank or --sv-*)")
    p.add_argument("--conv-rank", type=int, help="target rank of 3×3 convolutions (default: --rank)")
    p.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16", help="storage dtype (default fp16)")
    p.add_argument("--alpha", choices=("rank", "input"), default="rank",
                   help="alpha = rank (default) or the inputs' common alpha per module")
    p.add_argument("--metadata", choices=("new", "merge", "first"), default="merge",
                   help="merge (default): tags and trigger words of all inputs; first: the first input's metadata; "
                        "new: only the merge's own keys")
    p.add_argument("--title", help="modelspec.title / ss_output_name (default: the output's file name)")
    p.add_argument("--db", help="library database (default: LORAWB_DB, ComfyUI's user dir, or the per-user data dir)")
    p.add_argument("--no-library", action="store_true", help="do not open the library (inputs must be file paths; "
                                                             "the output is not indexed)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--modules", action="store_true", help="with --json: include every module")
    p.set_defaults(func=cmd_merge)
