"""Where the library lives and what it covers: database path, library roots, category mapping.

Database location, first match wins:

1. ``LORAWB_DB`` (environment variable): an explicit file path.
2. Inside ComfyUI (``folder_paths`` importable): ``<ComfyUI user dir>/lorawb/library.sqlite3``.
3. A per-user data directory: ``$XDG_DATA_HOME/lorawb`` or ``~/.local/share/lorawb`` (Linux), ``~/Library/Application
   Support/lorawb`` (macOS), ``%LOCALAPPDATA%\\lorawb`` (Windows); file ``library.sqlite3``.

Roots: the ``ROOT`` arguments, else ``roots`` from the config file, else every ``loras`` folder ComfyUI knows
(``folder_paths.get_folder_paths("loras")``, which includes ``extra_model_paths.yaml``).

The config file is JSON: ``LORAWB_CONFIG``, else ``config.json`` next to the default database::

    {"roots": ["/data/loras"], "categories": {"outfits": "CLT", "sdxl": ""}, "ledger": true}

``categories`` extends :data:`lorawb_core.library.stable_ids.DEFAULT_CATEGORIES` (see there for the rule); ``ledger: false``
stops lorawb from writing ``.lorawb-ids.json`` into the library roots.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError

DB_FILE_NAME = "library.sqlite3"
CONFIG_FILE_NAME = "config.json"


def _comfy_folder_paths() -> Any | None:
    """ComfyUI's ``folder_paths`` module when lorawb runs inside ComfyUI, else None (never imported otherwise)."""
    module = sys.modules.get("folder_paths")
    if module is not None:
        return module
    try:
        if importlib.util.find_spec("folder_paths") is None:
            return None
    except (ImportError, ValueError):
        return None
    import folder_paths  # type: ignore[import-not-found]

    return folder_paths


def user_data_dir() -> Path:
    """The per-user data directory for lorawb on this platform (not created)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(Path.home(), "AppData", "Local")
    elif sys.platform == "darwin":
        base = os.path.join(Path.home(), "Library", "Application Support")
    else:
        base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "lorawb"


def default_db_path() -> Path:
    """The database file lorawb uses when none is given (see the module docstring for the order)."""
    env = os.environ.get("LORAWB_DB")
    if env:
        return Path(env).expanduser()
    fp = _comfy_folder_paths()
    if fp is not None and hasattr(fp, "get_user_directory"):
        return Path(fp.get_user_directory()) / "lorawb" / DB_FILE_NAME
    return user_data_dir() / DB_FILE_NAME


def comfy_lora_roots() -> list[str]:
    """Every ``loras`` folder ComfyUI knows (incl. ``extra_model_paths.yaml``); empty outside ComfyUI."""
    fp = _comfy_folder_paths()
    if fp is None or not hasattr(fp, "get_folder_paths"):
        return []
    return [str(p) for p in fp.get_folder_paths("loras")]


@dataclass
class LibraryConfig:
    """Settings read from the config file (all optional)."""

    roots: list[str] = field(default_factory=list)
    categories: dict[str, str] = field(default_factory=dict)
    ledger: bool = True
    path: Path | None = None  # the file these came from, if any


def config_path() -> Path:
    env = os.environ.get("LORAWB_CONFIG")
    if env:
        return Path(env).expanduser()
    return default_db_path().parent / CONFIG_FILE_NAME


def load_config(path: str | os.PathLike[str] | None = None) -> LibraryConfig:
    """Read the JSON config file; a missing file gives the defaults, a broken one a :class:`UsageError`."""
    p = Path(path) if path is not None else config_path()
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return LibraryConfig()
    except (OSError, ValueError) as exc:
        raise UsageError(f"{p}: cannot read the lorawb config file ({exc}); fix or delete it.") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{p}: the lorawb config file must hold a JSON object.")
    roots = raw.get("roots") or []
    cats = raw.get("categories") or {}
    if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
        raise UsageError(f"{p}: 'roots' must be a list of folder paths.")
    if not isinstance(cats, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in cats.items()):
        raise UsageError(f"{p}: 'categories' must map folder names to three-letter codes (or \"\" to skip a level).")
    return LibraryConfig(roots=[os.path.expanduser(r) for r in roots], categories=cats,
                         ledger=bool(raw.get("ledger", True)), path=p)


def resolve_roots(roots: list[str] | None, config: LibraryConfig | None = None) -> list[str]:
    """The roots to scan: the given ones, else the config file's, else ComfyUI's ``loras`` folders."""
    if roots:
        return list(roots)
    config = config or load_config()
    if config.roots:
        return list(config.roots)
    comfy = comfy_lora_roots()
    if comfy:
        return comfy
    raise UsageError("No library roots: pass the LoRA folders to index (lorawb index /path/to/loras) or list them "
                     f"under \"roots\" in {config_path()}.")
