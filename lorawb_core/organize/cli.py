"""``lorawb organize``: organize the drop folder, or ``--reconcile [--fix]``, ``--clean``, ``--undo [RUN]``,
``--runs``.

Settings (the ``organize`` object of the lorawb config file, ``LORAWB_CONFIG``), each also a flag::

    {"organize": {"drop": "/data/incoming", "into": "{family}/{slug}/", "families": ["sd15", "sdxl"]}}
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field

from ..errors import UsageError


@dataclass
class OrganizeSettings:
    drop: str | None = None
    into: str = "{slug}/"
    families: list[str] = field(default_factory=list)


def organize_settings() -> OrganizeSettings:
    from ..library.config import config_path

    try:
        raw = json.loads(config_path().read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError, OSError):
        return OrganizeSettings()  # a broken config file is reported by the library's own reader
    section = raw.get("organize") if isinstance(raw, dict) else None
    if not isinstance(section, dict):
        return OrganizeSettings()
    families = section.get("families") or []
    if not isinstance(families, list) or not all(isinstance(f, str) for f in families):
        raise UsageError(f"{config_path()}: organize.families must be a list of family codes (sd15, sdxl, flux…).")
    return OrganizeSettings(drop=section.get("drop"), into=section.get("into") or "{slug}/", families=families)


def _root(args: argparse.Namespace) -> str:
    from ..library.config import resolve_roots

    return os.path.abspath(args.root or resolve_roots(None)[0])


def _print_result(result, out) -> None:
    for line in result.recovered:
        out.line(f"recovered: {line}")
    for line in result.plan.lines():
        out.line(line)
    for note in result.notes:
        out.line(note)
    if result.run_id is not None:
        out.line(f"run {result.run_id}: {result.organized} organized, {result.rejected} set aside, {result.moved} "
                 f"files moved" + (f"; stopped: {result.error}" if result.error else ""))
    else:
        out.line("dry run: nothing was changed")


def cmd_organize(args: argparse.Namespace, out) -> int:
    from ..library.config import default_db_path
    from ..library.db import open_library

    db_path = str(args.db or default_db_path())
    settings = organize_settings()
    with open_library(db_path) as db:
        if args.undo is not None:
            from .undo import undo

            if args.undo != "last" and not args.undo.isdigit():
                raise UsageError(f"--undo {args.undo}: give a run number (lorawb organize --runs lists them) or "
                                 "nothing for the last run.")
            result = undo(db, db_path, None if args.undo == "last" else int(args.undo))
            if args.json:
                out.json(result.to_dict())
            else:
                out.line(f"undid run {result.undone_run}: {result.restored} files put back, {len(result.removed)} "
                         "created files/folders removed")
                for line in result.kept:
                    out.line(f"  kept {line}")
            return 0
        if args.runs:
            rows = list(db.query("SELECT id, kind, state, started, finished, root, drop_dir, summary FROM "
                                 "organize_runs ORDER BY id DESC LIMIT 20"))
            if args.json:
                out.json(rows)
            for r in rows if not args.json else []:
                out.line(f"{r['id']:>4} {r['kind']:<9} {r['state']:<11} {r['started']} {r['drop_dir'] or ''} → "
                         f"{r['root']}")
            return 0
        root = _root(args)
        if args.reconcile:
            from .reconcile import reconcile

            report = reconcile(db, db_path, root, fix=args.fix)
            if args.json:
                out.json(report.to_dict())
            else:
                out.line(f"reconcile {root}: {report.folders} organized folders")
                for f in report.errors:
                    out.line(f"error{' (fixed)' if f.fixed else ''}: {f.message}")
                for f in report.warnings:
                    out.line(f"warning{' (fixed)' if f.fixed else ''}: {f.message}")
                out.line("ok" if report.ok else f"{sum(not f.fixed for f in report.errors)} error(s)")
            return 0 if report.ok else 1
        from .run import OrganizeOptions, organize

        drop = args.drop or settings.drop or root
        options = OrganizeOptions(drop=drop, root=root, rule=args.into or settings.into,
                                  families=set(args.family or settings.families), dry_run=args.dry_run,
                                  preview=not args.no_preview)
        if args.clean:
            from .clean import clean

            result = clean(db, db_path, options)
        else:
            result = organize(db, db_path, options)
        if args.json:
            out.json(result.to_dict())
        else:
            _print_result(result, out)
        return 1 if result.error else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("organize", help="test the drop folder's LoRAs and file them into folders (journaled, "
                                        "undoable)")
    p.add_argument("--drop", help="the drop folder (default: organize.drop, else the loose files at the top of the "
                                  "root)")
    p.add_argument("--into", help="destination rule (default: organize.into, else '{slug}/'); tokens {family} "
                                  "{variant} {category} {slug} {stable_id}")
    p.add_argument("--root", help="the library root to organize into (default: the first library root)")
    p.add_argument("--family", action="append", help="allow only this family (repeatable; default: "
                                                     "organize.families, else every family)")
    p.add_argument("--dry-run", action="store_true", help="print the whole plan and change nothing")
    p.add_argument("--no-preview", action="store_true", help="do not queue preview images")
    p.add_argument("--reconcile", action="store_true", help="check index.json, the folders and the library agree")
    p.add_argument("--fix", action="store_true", help="with --reconcile: repair what is safe")
    p.add_argument("--clean", action="store_true", help="move LoRAs of the root that fail the test to _incompatible/")
    p.add_argument("--undo", nargs="?", const="last", metavar="RUN", help="undo a run (default: the last one)")
    p.add_argument("--runs", action="store_true", help="list the last organize runs")
    p.add_argument("--db", help="library database (default: LORAWB_DB, ComfyUI's user dir, or the per-user data dir)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_organize)
