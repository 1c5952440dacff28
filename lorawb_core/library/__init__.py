"""The LoRA library: SQLite index, stable IDs, scans, search and invariant checks.

>>> db = open_library("/tmp/library.sqlite3")          # doctest: +SKIP
>>> summary = scan(db, ["/data/loras"])                  # doctest: +SKIP
>>> search(db, text="anime", family="sdxl").items[0].stable_id   # doctest: +SKIP
'SDX-CHR-001'

Importing this package never imports ComfyUI; ``folder_paths`` is only looked up when a default location or
ComfyUI's roots are asked for.
"""

from __future__ import annotations

import sqlite_utils as _sqlite_utils

from ..errors import LibraryError

if not hasattr(_sqlite_utils, "Migrations"):  # 3.x: no migrations, no Database.atomic
    from importlib.metadata import version as _version

    raise LibraryError(f"the lorawb library needs sqlite-utils 4 or newer, not {_version('sqlite-utils')}: "
                       "pip install 'sqlite-utils>=4'")

from .check import CheckResult, run_checks
from .config import default_db_path, resolve_roots
from .db import open_library
from .scan import ScanProgress, ScanSummary, measure_pending, reindex, scan
from .search import LoraEntry, SearchPage, SearchQuery, duplicates, get_lora, search
from .stable_ids import export_ids, import_ids

__all__ = ["CheckResult", "LoraEntry", "ScanProgress", "ScanSummary", "SearchPage", "SearchQuery", "default_db_path",
           "duplicates", "export_ids", "get_lora", "import_ids", "measure_pending", "open_library", "reindex",
           "resolve_roots", "run_checks", "scan", "search"]
