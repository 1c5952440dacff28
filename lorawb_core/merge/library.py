"""Index a merged file the moment it is written, so it has its stable ID at once (both scan phases, one file)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import LibraryError


def _root_for(db, path: str) -> str:
    """The library root holding ``path`` (the longest one), else the file's folder."""
    roots = [r for (r,) in db.execute("SELECT DISTINCT root FROM loras WHERE root IS NOT NULL").fetchall()]
    inside = [r for r in roots if path == r or path.startswith(r.rstrip(os.sep) + os.sep)]
    return max(inside, key=len) if inside else os.path.dirname(path)


def index_new_file(db, path: str | os.PathLike[str]) -> str:
    """Add the file to the library (structure and measurement) and return its new stable ID."""
    import importlib

    scan_mod = importlib.import_module("..library.scan", __package__)  # the package's `scan` is the function
    from ..library.listing import stat_file

    p = os.path.abspath(os.fspath(path))
    root = _root_for(db, p)
    f = stat_file(p, root, os.path.relpath(p, root))
    if f is None:
        raise LibraryError(f"{p} vanished right after it was written; rescan the library.")
    summary = scan_mod.ScanSummary(roots=[root])
    summary.files = 1
    job = scan_mod._job(f)
    scan_mod._write_structure(db, [(f, scan_mod.file_tasks.analyse(job))], scan_mod.category_mapping(None), True, summary)
    row = db.execute("SELECT id, stable_id FROM loras WHERE path = ?", [p]).fetchone()
    if row is None or not row[1]:
        why = "; ".join(summary.warnings) or "no library row"
        raise LibraryError(f"{Path(p).name} was written but could not be indexed ({why}); run lorawb index.")
    scan_mod._write_measured(db, [((row[0], *job), scan_mod.file_tasks.measure(job))], summary)
    scan_mod._write_ledgers(db, [root], summary)
    scan_mod._finish(db, summary)
    return row[1]
