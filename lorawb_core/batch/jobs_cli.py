"""``lorawb jobs list|show|cancel|retry|run``: the batch queue from the command line.

Exit codes: 0 fine (``run``: every job done); 1 an error (no server answers: the jobs stay queued, the message
names the URLs); 3 ``run`` finished with failed or cancelled jobs; 4 ``run`` stopped with jobs left.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import UsageError

EXIT_FAILED, EXIT_LEFT = 3, 4


def _queue(args: argparse.Namespace):
    from .queue import BatchQueue

    return BatchQueue(args.db, getattr(args, "results", None))


def _job_line(job: Any) -> str:
    where = f" on {job.server}" if job.server else ""
    extra = f"  {job.images[0]}" if job.images else (f"  {job.error}" if job.error else "")
    return f"{job.id:>6}  {job.state:<9} {job.key:<32} try {job.attempts}{where}{extra}"


def cmd_list(args: argparse.Namespace, out) -> int:
    q = _queue(args)
    try:
        if args.batch is None and not args.state:
            batches = q.batches(limit=args.limit)
            if args.json:
                out.json([b.to_dict() for b in batches])
                return 0
            if not batches:
                out.line("no batches queued yet.")
            for b in batches:
                counts = ", ".join(f"{n} {s}" for s, n in b.counts.items() if n)
                out.line(f"batch {b.id:>4}  {b.kind:<8} {b.title or '':<30} {b.created}  {counts}")
            return 0
        jobs = q.jobs(args.batch, args.state, limit=args.limit)
        if args.json:
            out.json([j.to_dict() for j in jobs])
            return 0
        for job in jobs:
            out.line(_job_line(job))
        return 0
    finally:
        q.close()


def cmd_show(args: argparse.Namespace, out) -> int:
    q = _queue(args)
    try:
        job = q.job(args.job_id, workflow=args.workflow)
    finally:
        q.close()
    if args.json:
        out.json(job.to_dict(workflow=args.workflow))
        return 0
    data = job.to_dict(workflow=args.workflow)
    for name in ("id", "batch_id", "key", "label", "state", "attempts", "group", "server", "prompt_id",
                 "server_prompt_id", "created", "submitted_at", "started_at", "finished_at", "error"):
        if data.get(name) not in (None, ""):
            out.line(f"{name:>16}: {data[name]}")
    for path in job.images:
        out.line(f"{'image':>16}: {path}")
    if args.workflow:
        import json

        out.line(json.dumps(job.workflow, indent=2))
    return 0


def _targets(args: argparse.Namespace) -> dict[str, Any]:
    if (args.batch is None) == (not args.job_ids):
        raise UsageError("give job ids or --batch N (not both).")
    return {"batch_id": args.batch, "job_ids": args.job_ids}


def cmd_cancel(args: argparse.Namespace, out) -> int:
    q = _queue(args)
    try:
        targets = _targets(args)
        flying = q.cancel(**targets)
        jobs = q.jobs(args.batch) if args.batch is not None else [q.job(i) for i in args.job_ids]
    finally:
        q.close()
    cancelled = [j for j in jobs if j.state == "cancelled"]
    if args.json:
        out.json({"cancelled": [j.id for j in cancelled], "dropped_from_server": [j.id for j in flying]})
    else:
        out.line(f"{len(cancelled)} job(s) cancelled ({len(flying)} taken off their server).")
    return 0


def cmd_retry(args: argparse.Namespace, out) -> int:
    q = _queue(args)
    try:
        count = q.retry(**_targets(args))
    finally:
        q.close()
    if args.json:
        out.json({"requeued": count})
    else:
        out.line(f"{count} job(s) queued again; `lorawb jobs run` runs them.")
    return 0


def cmd_run(args: argparse.Namespace, out) -> int:
    """Run the queued jobs (of ``--batch`` or all) on the servers until none is left; a progress bar on stderr."""
    from tqdm import tqdm

    q = _queue(args)
    try:
        total = len(q.jobs(args.batch, ("queued", "submitted", "running")))
        bar = tqdm(total=total, unit="job", desc="jobs", file=sys.stderr, disable=args.json or not sys.stderr.isatty())

        def progress(ev: Any) -> None:
            if ev.state in ("done", "failed"):
                bar.update(1)
            if ev.state == "failed" and not args.json:
                bar.write(f"job {ev.job_id} ({ev.key}) failed: {ev.error}", file=sys.stderr)

        try:
            summary = q.run(args.batch, args.server or None, progress=progress, in_flight=args.in_flight,
                            backend=args.backend)
        finally:
            bar.close()
        failed = q.jobs(args.batch, ("failed", "cancelled")) if args.batch is not None else []
        images = q.batch_dir(args.batch) if args.batch is not None else None
    finally:
        q.close()
    data = {"done": summary.done, "failed": summary.failed, "requeued": summary.requeued,
            "recovered": summary.recovered, "left": summary.left, "per_server": summary.per_server}
    if args.json:
        out.json(data)
    else:
        out.line(f"{summary.done} done, {summary.failed} failed, {summary.left} left"
                 + (f" (followed {summary.recovered} already on a server)" if summary.recovered else "") + ".")
        if images is not None:
            out.line(f"images: {images}")
    if summary.left:
        return EXIT_LEFT
    return EXIT_FAILED if summary.failed or failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help="the batch queue: list, show, cancel, retry and run generated ComfyUI jobs")
    jobs = p.add_subparsers(dest="jobs_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", help="library database (default: LORAWB_DB, ComfyUI's user dir, or the per-user data "
                                     "dir)")
    common.add_argument("--json", action="store_true", help="print JSON")
    s = jobs.add_parser("list", parents=[common], help="the batches (or, with --batch/--state, their jobs)")
    s.add_argument("--batch", type=int, help="list this batch's jobs")
    s.add_argument("--state", action="append", default=[], choices=("queued", "submitted", "running", "done",
                                                                     "failed", "cancelled"), help="only jobs in STATE")
    s.add_argument("--limit", type=int, default=1000)
    s.set_defaults(func=cmd_list)
    s = jobs.add_parser("show", parents=[common], help="one job: state, server, timings, error, images")
    s.add_argument("job_id", type=int)
    s.add_argument("--workflow", action="store_true", help="also print the API-format workflow")
    s.set_defaults(func=cmd_show)
    for name, fn, text in (("cancel", cmd_cancel, "cancel jobs (in-flight ones are taken off their server)"),
                           ("retry", cmd_retry, "queue failed and cancelled jobs again")):
        s = jobs.add_parser(name, parents=[common], help=text)
        s.add_argument("job_ids", nargs="*", type=int, help="job ids")
        s.add_argument("--batch", type=int, help="every job of this batch")
        s.set_defaults(func=fn)
    s = jobs.add_parser("run", parents=[common], help="run queued jobs on ComfyUI servers until none is left")
    s.add_argument("--batch", type=int, help="only this batch")
    s.add_argument("--server", action="append", default=[], metavar="URL",
                   help="a ComfyUI server (repeat for several; default: LORAWB_SERVERS, the config's servers, "
                        "http://127.0.0.1:8188)")
    s.add_argument("--in-flight", type=int, help="prompts per server at once (default 2)")
    s.add_argument("--backend", choices=("builtin", "ray"), help="dispatcher (default: the batch_backend setting)")
    s.add_argument("--results", help="where images go for batches queued without a folder (default: next to the "
                                     "database, batches/)")
    s.set_defaults(func=cmd_run)
