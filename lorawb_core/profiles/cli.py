"""``lorawb profiles list|show|create|edit|duplicate|delete|import|export``: a thin layer over the profiles API.

A profile is named by its id (digits) or its name (with ``--layout`` when the name exists for several layouts).
Every command takes ``--db FILE`` like the library commands.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from ..errors import ProfileError
from ..library.db import open_library
from .import_export import DIALECTS, export_profiles, import_profiles
from .model import Profile, family_layouts, fmt_weight, layout_of
from .parse import apply_assignments, parse_weights, read_assignments
from .schedule import edit_schedule
from .store import (
    create_profile,
    delete_profile,
    duplicate_profile,
    get_profile,
    get_profile_by_id,
    list_profiles,
    save_profiles,
    update_profile,
)

BAR_WIDTH = 24


def _resolve(db, ref: str, layout_id: str | None) -> Profile:
    ref = ref.strip()
    return get_profile_by_id(db, int(ref)) if ref.isdigit() else get_profile(db, ref, layout_id)


def _row(p: Profile) -> str:
    ident = str(p.id) if p.id is not None else "-"
    desc = p.description if len(p.description) <= 60 else p.description[:59] + "…"
    return f"{ident:>4}  {p.layout_id:<22} {p.name:<14} {p.source:<8} mean {p.stats().mean:5.2f}  {desc}"


def _render(p: Profile, out) -> None:
    s = p.stats()
    out.line(f"{p.label}  ({p.source}{f', id {p.id}' if p.id is not None else ''})")
    if p.description:
        out.line(f"  {p.description}")
    out.line(f"  mean {s.mean:.4g}  variance {s.variance:.4g}  min {fmt_weight(s.min)}  max {fmt_weight(s.max)}")
    peak = max((abs(v) for v in p.weights.values()), default=0.0)
    for block, v in p.weights.items():
        bar = "█" * round(abs(v) / peak * BAR_WIDTH) if peak > 0 else ""
        ranges = ", ".join(span.text() for span in p.schedule.get(block, ()))  # "0.5@0-40%": active over those
        out.line(f"  {block:>5} {fmt_weight(v):>7} {'-' if v < 0 else ' '}{bar:<{BAR_WIDTH}}  {ranges}".rstrip())
    if p.updated:
        out.line(f"  created {p.created}   updated {p.updated}")


def cmd_list(args: argparse.Namespace, out) -> int:
    with open_library(args.db) as db:
        profiles = list_profiles(db, args.layout, builtins=not args.no_builtins)
    if args.family:
        family_layouts(args.family)  # unknown family → ProfileError
        profiles = [p for p in profiles if p.family == args.family]
    if args.json:
        out.json({"schema": 1, "profiles": [p.to_dict() for p in profiles]})
        return 0
    for p in profiles:
        out.line(_row(p))
    out.line(f"{len(profiles)} profile(s)")
    return 0


def cmd_show(args: argparse.Namespace, out) -> int:
    with open_library(args.db) as db:
        profile = _resolve(db, args.profile, args.layout)
    if args.json:
        out.json({"schema": 1, **profile.to_dict()})
    else:
        _render(profile, out)
    return 0


def _notes(notes: list[str], out) -> None:
    for n in notes:
        out.line(f"note: {n}")


def cmd_create(args: argparse.Namespace, out) -> int:
    with open_library(args.db) as db:
        parsed = parse_weights(args.weights, family=args.family, layout_id=args.layout,
                               known=lambda: list_profiles(db, builtins=False))
        profile = create_profile(db, args.name, parsed.profile.layout_id, parsed.profile.weights,
                                 description=args.description or "", schedule=parsed.profile.schedule)
    _notes(parsed.notes, out)
    out.line(f"created {profile.label} (id {profile.id})")
    return 0


def cmd_edit(args: argparse.Namespace, out) -> int:
    if args.name is None and args.weights is None and args.set is None and args.description is None:
        out.error("lorawb profiles edit: give --name, --weights, --set or --description.")
        return 2
    with open_library(args.db) as db:
        current = _resolve(db, args.profile, args.layout)
        weights = schedule = None
        notes: list[str] = []
        if args.weights is not None:  # a whole new profile: its weights and its ranges
            parsed = parse_weights(args.weights, layout_id=current.layout_id,
                                   known=lambda: list_profiles(db, builtins=False))
            weights, notes, schedule = dict(parsed.profile.weights), parsed.notes, dict(parsed.profile.schedule)
        if args.set is not None:  # only the named blocks: their weights and ranges (a plain value: the whole run)
            items, default = read_assignments(args.set)
            if default is not None:
                raise ProfileError("--set changes only the blocks it names, so it takes no default; use "
                                   "--weights 'default=…, …' to set every block.")
            layout = layout_of(current.layout_id)
            weights = {**(weights or {}), **apply_assignments(layout, items)}
            schedule = edit_schedule(layout.block_ids, current.schedule if schedule is None else schedule, items)
        profile = update_profile(db, current, name=args.name, weights=weights, description=args.description,
                                 schedule=schedule)
    _notes(notes, out)
    out.line(f"updated {profile.label} (id {profile.id})")
    return 0


def cmd_duplicate(args: argparse.Namespace, out) -> int:
    with open_library(args.db) as db:
        copy = duplicate_profile(db, _resolve(db, args.profile, args.layout), args.new_name)
    out.line(f"created {copy.label} (id {copy.id})")
    return 0


def cmd_delete(args: argparse.Namespace, out) -> int:
    with open_library(args.db) as db:
        profile = _resolve(db, args.profile, args.layout)
        delete_profile(db, profile)
    out.line(f"deleted {profile.label} (id {profile.id})")
    return 0


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read the file ({exc}).") from None


def cmd_import(args: argparse.Namespace, out) -> int:
    report = import_profiles(_read(args.file), dialect=args.dialect, family=args.family, name_prefix=args.prefix)
    with open_library(args.db) as db:
        saved = save_profiles(db, report.profiles, dry_run=args.dry_run)
    verb = "would import" if args.dry_run else "imported"
    out.line(f"{verb} {len(saved.created)} profile(s) from {args.file} (dialect {report.dialect})")
    for p in saved.created:
        out.line(f"  + {p.label}" + (f" (id {p.id})" if p.id is not None else ""))
    skipped = report.skipped + saved.skipped
    if skipped:
        out.line(f"skipped {len(skipped)}:")
        for s in skipped:
            out.line(f"  - {s.item}: {s.reason}")
    _notes(report.notes, out)
    return 0


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_export(args: argparse.Namespace, out) -> int:
    with open_library(args.db) as db:
        if args.profiles:
            profiles = [_resolve(db, ref, args.layout) for ref in args.profiles]
        else:
            profiles = list_profiles(db, args.layout, builtins=args.builtins)
    if not profiles:
        raise ProfileError("no profiles to export; name some, or add --builtins to export the built-ins.")
    text = export_profiles(profiles, args.dialect)
    if args.output in (None, "-"):
        out.out.write(text)
    else:
        try:
            _write_atomic(Path(args.output), text)
        except OSError as exc:
            raise ProfileError(f"{args.output}: cannot write the export ({exc}).") from None
        out.line(f"{len(profiles)} profile(s) written to {args.output} ({args.dialect})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``lorawb profiles …`` to the ``lorawb`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", help="library database (default: LORAWB_DB, ComfyUI's user dir or the user data dir)")
    ref = argparse.ArgumentParser(add_help=False)
    ref.add_argument("profile", help="profile id or name")
    ref.add_argument("--layout", help="layout id, when the name exists for several layouts")

    top = sub.add_parser("profiles", help="block-weight profiles: list, edit, import and export")
    actions = top.add_subparsers(dest="action", required=True)

    p = actions.add_parser("list", parents=[common], help="built-in and library profiles")
    p.add_argument("--layout", help="only this layout")
    p.add_argument("--family", help="only this family")
    p.add_argument("--no-builtins", action="store_true", help="only the library's own profiles")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = actions.add_parser("show", parents=[common, ref], help="one profile with its weights")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = actions.add_parser("create", parents=[common], help="store a new profile")
    p.add_argument("name")
    p.add_argument("weights", help="a vector, NAME:vector, a preset name, BLOCK=value assignments or JSON")
    p.add_argument("--layout", help="layout id (needed when the weights do not tell it)")
    p.add_argument("--family", help="family, to pick the layout from the vector length")
    p.add_argument("--description", help="one line shown next to the name")
    p.set_defaults(func=cmd_create)

    p = actions.add_parser("edit", parents=[common, ref], help="rename, re-weight or re-describe a profile")
    p.add_argument("--name", help="new name")
    p.add_argument("--weights", help="new weights for every block (any form `create` takes)")
    p.add_argument("--set", help="change only the named blocks, their ranges included, e.g. 'IN04-OUT05=0.5, BASE=0' "
                   "or 'OUT=1@0-50%%' (a plain value gives a block the whole run again)")
    p.add_argument("--description")
    p.set_defaults(func=cmd_edit)

    p = actions.add_parser("duplicate", parents=[common, ref], help="copy a profile (built-ins too) under a new name")
    p.add_argument("new_name")
    p.set_defaults(func=cmd_duplicate)

    p = actions.add_parser("delete", parents=[common, ref], help="remove a library profile")
    p.set_defaults(func=cmd_delete)

    p = actions.add_parser("import", parents=[common], help="import profiles from a file (- for stdin)")
    p.add_argument("file")
    p.add_argument("--dialect", choices=("auto", *DIALECTS), default="auto")
    p.add_argument("--family", help="sd2 reads 17/26-value vectors as SD 2.x (default SD 1.x)")
    p.add_argument("--prefix", default="", help="put before every imported name")
    p.add_argument("--dry-run", action="store_true", help="show what would be imported, write nothing")
    p.set_defaults(func=cmd_import)

    p = actions.add_parser("export", parents=[common], help="export profiles to stdout or a file")
    p.add_argument("profiles", nargs="*", metavar="PROFILE", help="ids or names (default: the library's profiles)")
    p.add_argument("--dialect", choices=DIALECTS, default="json")
    p.add_argument("--layout", help="only this layout (and the layout for names)")
    p.add_argument("--builtins", action="store_true", help="include the built-ins")
    p.add_argument("-o", "--output", help="write to this file (atomically) instead of stdout")
    p.set_defaults(func=cmd_export)
