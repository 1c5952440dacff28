"""What organize writes beside the LoRAs: ``config.yaml`` per folder (merged, never clobbered), ``index.json`` and
``preview_config.json`` in the root, ``<stem>.reason.txt`` beside a rejected file.

``index.json``::

    {"version": 1, "updated": "2026-…Z",
     "loras": {"<folder rel path>": {"name", "filename", "folder", "stable_id", "family", "compatible": true, …}},
     "rejected": {"<file rel path>": {"filename", "verdict": "incompatible" | "duplicate", "reason", …}}}

``preview_config.json`` is shared with the batch previews: organize creates it with ``{"version": 1}`` when it is
missing and otherwise leaves every key as it is.
"""

from __future__ import annotations

import json
import os
from typing import Any

import yaml

from ..errors import OrganizeError

INDEX_NAME = "index.json"
PREVIEW_CONFIG_NAME = "preview_config.json"
CONFIG_NAME = "config.yaml"
REASON_SUFFIX = ".reason.txt"
INCOMPATIBLE_DIR = "_incompatible"
DUPLICATES_DIR = "_duplicates"
CONFIG_FIELDS = ("name", "filename", "default_weight", "preview_image", "created", "compatible", "notes",
                 "stable_id", "family", "variant", "layout", "trigger_words", "sha256")
PREVIEW_SUFFIXES = (".preview.png", ".preview.jpg", ".preview.jpeg", ".preview.webp", ".png", ".jpg", ".jpeg", ".webp")


def read_config(path: str) -> dict[str, Any] | None:
    """A folder's ``config.yaml`` as a dict; None when missing; an :class:`OrganizeError` when it is not YAML."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise OrganizeError(f"{path}: cannot read this config.yaml ({exc}); fix it by hand (lorawb keeps it as is)."
                            ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise OrganizeError(f"{path}: config.yaml must hold a mapping (name: …, default_weight: …).")
    return data


def merged_config(existing: dict[str, Any] | None, ours: dict[str, Any]) -> dict[str, Any]:
    """Our fields added to an existing config: every value already there wins (a person may have edited it), except
    an empty (null) one where we know the value."""
    out = dict(ours)
    out.update({k: v for k, v in (existing or {}).items() if v is not None or k not in ours or ours[k] is None})
    return out


def config_bytes(config: dict[str, Any]) -> bytes:
    known = {k: config[k] for k in CONFIG_FIELDS if k in config}
    rest = {k: v for k, v in config.items() if k not in CONFIG_FIELDS}
    return yaml.safe_dump({**known, **rest}, sort_keys=False, allow_unicode=True).encode("utf-8")


def config_for(entry: dict[str, Any], created: str) -> dict[str, Any]:
    return {"name": entry["name"], "filename": entry["filename"], "default_weight": 1.0,
            "preview_image": entry.get("preview_image") or "", "created": created, "compatible": True, "notes": "",
            "stable_id": entry.get("stable_id"), "family": entry.get("family"), "variant": entry.get("variant"),
            "layout": entry.get("layout"), "trigger_words": list(entry.get("trigger_words") or []),
            "sha256": entry.get("sha256")}


def read_index(root: str) -> dict[str, Any]:
    path = os.path.join(root, INDEX_NAME)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {"version": 1, "loras": {}, "rejected": {}}
    except (OSError, ValueError) as exc:
        raise OrganizeError(f"{path}: cannot read the index ({exc}); move it aside and run `lorawb organize "
                            "--reconcile --fix` to rebuild it.") from None
    if not isinstance(data, dict):
        raise OrganizeError(f"{path}: the index must hold a JSON object; move it aside and run --reconcile --fix.")
    data.setdefault("loras", {})
    data.setdefault("rejected", {})
    return data


def index_bytes(index: dict[str, Any]) -> bytes:
    return (json.dumps(index, indent=1, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


def preview_config_bytes(root: str) -> bytes | None:
    """The bytes to write for ``preview_config.json``: None when a valid one exists (left untouched)."""
    path = os.path.join(root, PREVIEW_CONFIG_NAME)
    try:
        with open(path, encoding="utf-8") as fh:
            if isinstance(json.load(fh), dict):
                return None
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise OrganizeError(f"{path}: cannot read the preview settings ({exc}); fix or delete the file.") from None
    else:
        raise OrganizeError(f"{path}: the preview settings must be a JSON object; fix or delete the file.")
    return b'{\n "version": 1\n}\n'


def reason_text(entry: dict[str, Any]) -> bytes:
    return (f"{entry['filename']}: {entry['verdict']}\n{entry['reason']}\n").encode()
