"""``organize --clean``: LoRAs already in the library root that fail the test (unreadable, broken, unknown or
excluded family) move to ``_incompatible/`` with their sidecars and a reason, through the same journal."""

from __future__ import annotations

import os

from sqlite_utils import Database

from ..errors import OrganizeError
from ..library.listing import LORA_SUFFIX
from . import journal
from .files import DUPLICATES_DIR, INCOMPATIBLE_DIR, REASON_SUFFIX
from .lock import organize_lock
from .plan import SIDECAR_SUFFIXES, Plan, PlanItem, PlannedMove
from .run import OrganizeOptions, OrganizeResult, _apply, finish_pending
from .slugs import unique_name
from .verdict import INCOMPATIBLE, allowed_families, test_file


def _sidecars(path: str) -> list[str]:
    folder, stem = os.path.dirname(path), os.path.basename(path)[:-len(LORA_SUFFIX)]
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if n != os.path.basename(path) and n.startswith(stem) and n[len(stem):].lower() in SIDECAR_SUFFIXES)


def clean(db: Database, db_path: str, options: OrganizeOptions) -> OrganizeResult:
    from .moves import sha256_of

    root = os.path.abspath(options.root)
    aside = tuple(os.path.join(root, d) + os.sep for d in (INCOMPATIBLE_DIR, DUPLICATES_DIR))
    with organize_lock(db_path, "organize --clean"):
        recovered = journal.recover(db)
        plan = Plan(root=root, drop=root, rule="_incompatible/")
        families = allowed_families(sorted(options.families))
        folder = os.path.join(root, INCOMPATIBLE_DIR)
        taken = {n.casefold() for n in os.listdir(folder)} if os.path.isdir(folder) else set()
        prefix = root.rstrip(os.sep) + os.sep
        paths = [r[0] for r in db.execute("SELECT path FROM loras WHERE missing = 0 AND path >= ? AND path < ? "
                                          "ORDER BY path", [prefix, root + chr(ord(os.sep) + 1)])]
        for path in paths:
            if path.startswith(aside) or not os.path.isfile(path) or os.path.islink(path):
                continue
            v = test_file(path, None, families, {})
            if v.verdict != INCOMPATIBLE:
                continue
            stem = os.path.basename(path)[:-len(LORA_SUFFIX)]
            new_stem = unique_name(stem, taken)
            while f"{new_stem}{LORA_SUFFIX}".casefold() in taken or f"{new_stem}{REASON_SUFFIX}".casefold() in taken:
                new_stem = unique_name(stem, taken)
            taken.update({f"{new_stem}{LORA_SUFFIX}".casefold(), f"{new_stem}{REASON_SUFFIX}".casefold()})
            item = PlanItem(verdict=v, folder=folder)
            item.moves.append(PlannedMove(path, os.path.join(folder, new_stem + LORA_SUFFIX), v.sha256 or "", "lora"))
            for side in _sidecars(path):
                dst = os.path.join(folder, new_stem + os.path.basename(side)[len(stem):])
                item.moves.append(PlannedMove(side, dst, sha256_of(side), "sidecar"))
                taken.add(os.path.basename(dst).casefold())
            item.writes.append(os.path.join(folder, new_stem + REASON_SUFFIX))
            plan.items.append(item)
        result = OrganizeResult(plan=plan, recovered=recovered)
        if options.dry_run or not plan.items:
            return result
        result.run_id = journal.start_run(db, "organize", root, root, plan.rule)
        state = "done"
        try:
            _apply(db, result.run_id, plan, result, None)
        except OrganizeError as exc:  # stop; what is done stays done (and undoable)
            result.error, state = str(exc), "failed"
        finally:
            finish_pending(db, root)
            journal.finish_run(db, result.run_id, state, {"moved": result.moved, "rejected": result.rejected})
        return result
