"""``lorawb previews|ab|xy|finish``: plan generated ComfyUI jobs, queue them, and with ``--wait`` run and finish them.

Each command plans from the library and ``preview_config.json`` (every setting overridable: ``--checkpoint``,
``--size WxH``, ``--steps``, ``--cfg``, ``--seed``, ``--prompt``, ``--negative``), checks the workflows against the
first server's ``/object_info`` (a missing checkpoint is named with what the server has; nothing is queued), queues
the batch, and with ``--wait`` runs it (progress bar on stderr) and writes the previews / grid / ablation report.
Without ``--wait`` it prints the batch id: ``lorawb jobs run --batch N`` then ``lorawb finish N`` do the rest.

Exit codes: 0 fine; 1 an error (nothing queued, or no server answers: the jobs stay queued); 3 some LoRAs or cells
were skipped or failed (the others are done); 4 stopped with jobs left.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import ServerUnreachable, UsageError

EXIT_FAILED, EXIT_LEFT = 3, 4


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from .settings import coerce, parse_size

    values: dict[str, Any] = {}
    for name in ("checkpoint", "steps", "cfg", "seed", "prompt", "negative", "strength"):
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    if args.size:
        values.update(parse_size(args.size))
    return coerce(values, "command line")


def _check(plan: Any, servers: list[str], out) -> None:
    """Refuse workflows the first server cannot run; an unreachable server only warns (the jobs stay queued)."""
    from .server_check import check_workflow, get_object_info
    from .servers import queue_settings

    url = queue_settings(servers or None).urls[0]
    try:
        info = get_object_info(url, timeout=30)
    except ServerUnreachable as exc:
        out.error(f"warning: the workflows were not checked ({exc})")
        return
    seen: set[str] = set()
    for item in plan.items:
        fingerprint = item.group + "|" + ",".join(sorted(n["class_type"] for n in item.workflow.values()))
        if fingerprint not in seen:
            seen.add(fingerprint)
            check_workflow(item.workflow, info, url)


def _report_skipped(planned: Any, out, as_json: bool) -> None:
    if not as_json:
        for s in planned.skipped:
            out.error(f"skipped {s.item}: {s.reason}")


def _run(args: argparse.Namespace, out, build) -> int:
    from ..library.db import open_library
    from .queue import BatchQueue
    from .settings import load_preview_config
    from .templates import UserTemplate

    config = load_preview_config(args.preview_config)
    template = UserTemplate.load(args.template) if args.template else None
    with open_library(args.db) as db:
        planned = build(db, config=config, overrides=_overrides(args), template=template)
        _report_skipped(planned, out, args.json)
        if not planned.plan.items:
            if args.json:
                out.json({"batch_id": None, "queued": 0, "skipped": planned.plan.spec.get("skipped", [])})
            else:
                out.line("nothing to queue.")
            return EXIT_FAILED if planned.skipped else 0
        if not args.no_check:
            _check(planned.plan, args.server, out)
        q = BatchQueue(args.db, args.results)
        try:
            batch_id = q.submit(planned.plan)
            data: dict[str, Any] = {"batch_id": batch_id, "queued": len(planned.plan.items),
                                    "skipped": planned.plan.spec.get("skipped", [])}
            if not args.wait:
                if args.json:
                    out.json(data)
                else:
                    out.line(f"batch {batch_id} queued ({len(planned.plan.items)} job(s)): `lorawb jobs run --batch "
                             f"{batch_id}` runs it, then `lorawb finish {batch_id}`.")
                return EXIT_FAILED if planned.skipped else 0
            summary = _wait(q, batch_id, args)
            if summary.left:
                data.update(left=summary.left)
                out.json(data) if args.json else out.line(f"batch {batch_id} stopped with {summary.left} job(s) left.")
                return EXIT_LEFT
            from .finish import finish_batch

            done = finish_batch(q, batch_id, db, out=getattr(args, "out", None), force=getattr(args, "force", None))
        finally:
            q.close()
    data.update(done.to_dict())
    _print_finished(done, out, args.json, data)
    return EXIT_FAILED if (done.failed or planned.skipped) else 0


def _wait(q: Any, batch_id: int, args: argparse.Namespace):
    from tqdm import tqdm

    total = len(q.jobs(batch_id))
    bar = tqdm(total=total, unit="image", desc=f"batch {batch_id}", file=sys.stderr,
               disable=args.json or not sys.stderr.isatty())

    def progress(ev: Any) -> None:
        if ev.state in ("done", "failed"):
            bar.update(1)
        if ev.state == "failed" and not args.json:
            bar.write(f"{ev.key} failed: {ev.error}", file=sys.stderr)

    try:
        return q.run(batch_id, args.server or None, progress=progress)
    finally:
        bar.close()


def _print_finished(done: Any, out, as_json: bool, data: dict[str, Any]) -> None:
    if as_json:
        out.json(data)
        return
    for p in done.previews:
        out.line(f"{p['stable_id']}: {p['path']}" if p["path"] else p["error"])
    if done.grid:
        out.line(f"grid: {done.grid['path']} ({len(done.grid['cells'])} cells, {done.grid['failed']} failed)")
    if done.report_text:
        out.line(done.report_text)
        out.line(f"report: {done.report_path}")


def cmd_previews(args: argparse.Namespace, out) -> int:
    from .planners import plan_previews

    return _run(args, out, lambda db, **kw: plan_previews(db, args.ids, missing=args.missing,
                                                          filter_text=args.filter or "", force=args.force, **kw))


def cmd_ab(args: argparse.Namespace, out) -> int:
    from .planners import plan_ab

    strengths = [s for s in (args.strengths or "").split(",") if s.strip()]
    profiles = [p for p in (args.profiles or "").split(",") if p.strip()]
    return _run(args, out, lambda db, **kw: plan_ab(db, args.entries, strengths=strengths, profiles=profiles,
                                                    confirm=args.yes, **kw))


def cmd_xy(args: argparse.Namespace, out) -> int:
    from .planners import Axis, plan_ablation, plan_xy

    if args.ablate:
        if args.x or args.y:
            raise UsageError("--ablate makes its own axis (every block); leave out --x and --y.")
        return _run(args, out, lambda db, **kw: plan_ablation(db, args.entries, mode=args.ablate, confirm=args.yes,
                                                              **kw))
    if not args.x:
        raise UsageError("give the x axis (--x strength=0,0.5,1) or --ablate.")
    x, y = Axis.parse(args.x), Axis.parse(args.y) if args.y else None
    return _run(args, out, lambda db, **kw: plan_xy(db, args.entries, x, y, confirm=args.yes, **kw))


def cmd_finish(args: argparse.Namespace, out) -> int:
    from ..library.db import open_library
    from .finish import finish_batch
    from .queue import BatchQueue

    q = BatchQueue(args.db, args.results)
    try:
        with open_library(args.db) as db:
            done = finish_batch(q, args.batch_id, db, out=args.out, force=args.force or None)
    finally:
        q.close()
    _print_finished(done, out, args.json, done.to_dict())
    return EXIT_FAILED if done.failed else 0


def _common() -> argparse.ArgumentParser:
    c = argparse.ArgumentParser(add_help=False)
    c.add_argument("--db", help="library database (default: LORAWB_DB, ComfyUI's user dir, or the per-user data dir)")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.add_argument("--server", action="append", default=[], metavar="URL",
                   help="a ComfyUI server (repeat for several; default: the queue's settings)")
    c.add_argument("--wait", action="store_true", help="run the batch now and finish it (previews, grid, report)")
    c.add_argument("--template", metavar="FILE", help="a user template: an API-format workflow with our loader node")
    c.add_argument("--preview-config", metavar="FILE", help="preview settings file (default: preview_config.json "
                                                            "next to the library's config.json)")
    c.add_argument("--results", metavar="DIR", help="where the batch's images go (default: batches/ next to the "
                                                    "database)")
    c.add_argument("--no-check", action="store_true", help="do not check the workflows against the server first")
    for name, kind, text in (("checkpoint", str, "checkpoint name as the server lists it"),
                             ("steps", int, "sampler steps"), ("cfg", float, "CFG scale"), ("seed", int, "seed"),
                             ("prompt", str, "prompt ({triggers} and {name} are filled in)"),
                             ("negative", str, "negative prompt"), ("strength", float, "the LoRA's strength")):
        c.add_argument(f"--{name}", type=kind, help=text)
    c.add_argument("--size", metavar="WxH", help="image size, e.g. 640x640")
    return c


def register(sub: argparse._SubParsersAction) -> None:
    common = _common()
    p = sub.add_parser("previews", parents=[common], help="generate <stem>.preview.png next to LoRAs on ComfyUI")
    p.add_argument("ids", nargs="*", metavar="ID_OR_PATH")
    p.add_argument("--missing", action="store_true", help="every LoRA without a preview (with --filter: of those)")
    p.add_argument("--filter", metavar="TEXT", help="LoRAs matching a search (words, and family=… category=… …)")
    p.add_argument("--force", action="store_true", help="replace existing previews")
    p.set_defaults(func=cmd_previews)
    stack = dict(nargs="+", metavar="ID_OR_PATH[:S][@W]", help="the LoRA or stack (strength, block weights)")
    p = sub.add_parser("ab", parents=[common], help="a LoRA or stack side by side at strengths or profiles")
    p.add_argument("entries", **stack)
    p.add_argument("--strengths", metavar="S,S,…", help="each LoRA's strength times each of these")
    p.add_argument("--profiles", metavar="P,P,…", help="block-weight profiles (ALL, INS, OUTD, saved names …)")
    p.add_argument("--out", metavar="FILE", help="the grid image (default: grid.png in the batch folder)")
    p.add_argument("--yes", action="store_true", help="confirm a batch over the size limit")
    p.set_defaults(func=cmd_ab)
    p = sub.add_parser("xy", parents=[common], help="an XY grid over strength, profile, block, seed, lora, checkpoint")
    p.add_argument("entries", **stack)
    p.add_argument("--x", metavar="AXIS=V,V,…", help="e.g. strength=0,0.5,1")
    p.add_argument("--y", metavar="AXIS=V,V,…", help="e.g. profile=ALL,INS,OUTD")
    p.add_argument("--ablate", nargs="?", const="mute", choices=("mute", "solo"),
                   help="block ablation: each block muted (default) or alone, with a per-block report")
    p.add_argument("--out", metavar="FILE", help="the grid image (default: grid.png in the batch folder)")
    p.add_argument("--yes", action="store_true", help="confirm a grid over the limit (64 cells)")
    p.set_defaults(func=cmd_xy)
    p = sub.add_parser("finish", help="write the previews / grid / report of a batch run with `lorawb jobs run`")
    p.add_argument("batch_id", type=int)
    p.add_argument("--db")
    p.add_argument("--json", action="store_true")
    p.add_argument("--results", metavar="DIR")
    p.add_argument("--out", metavar="FILE", help="the grid image (default: grid.png in the batch folder)")
    p.add_argument("--force", action="store_true", help="replace existing previews")
    p.set_defaults(func=cmd_finish)
