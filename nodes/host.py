"""The pack's life inside ComfyUI: one library service, its background scan, its routes, the choosers' data.

At pack import (``start()``): the library database in ComfyUI's user directory (``LORAWB_DB`` overrides), every
``loras`` folder ComfyUI knows as roots, routes on ``PromptServer.instance.routes``, scan events through
``send_sync``, and an incremental scan in a background thread — start-up never waits for it. ``LORAWB_AUTOSCAN=0``
turns the start-up scan off; ``LORAWB_PRELOAD`` lists stable IDs to load into the cache once the scan is done.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from lorawb_core.cache import default_cache, preload_ids_from_env
from lorawb_core.errors import LorawbError
from lorawb_core.library.config import comfy_lora_roots
from lorawb_core.service import LibraryService

log = logging.getLogger("lorawb")
RESCAN_AFTER_S = 5.0  # a node-definition refresh rescans (incrementally) when the last scan is older than this
REFRESH_WAIT_S = 1.5  # …and waits this long for it, so a LoRA just added is in the lists it returns

_service: LibraryService | None = None
_lock = threading.Lock()
_last_scan_request = 0.0


def _emit(event: str, data: dict[str, Any]) -> None:
    try:
        from server import PromptServer

        instance = getattr(PromptServer, "instance", None)
    except ImportError:
        return
    if instance is not None:
        instance.send_sync(event, data)


def service() -> LibraryService:
    """The process-wide library service (created on first use)."""
    global _service
    with _lock:
        if _service is None:
            _service = LibraryService(roots=comfy_lora_roots, emit=_emit)
        return _service


def with_db(fn, *args, **kwargs):
    return service().with_db(fn, *args, **kwargs)


def refresh() -> None:
    """Called when node definitions are listed: an incremental rescan if none ran lately (cheap: unchanged files
    cost a stat), waited for briefly so a LoRA dropped into a folder shows up on the next refresh at the latest."""
    global _last_scan_request
    svc = service()
    if os.environ.get("LORAWB_AUTOSCAN", "1") == "0" or not svc.roots():
        return
    now = time.monotonic()
    if now - _last_scan_request < RESCAN_AFTER_S:
        return
    _last_scan_request = now
    status = svc.start_scan()
    if status.get("started"):
        svc.wait(REFRESH_WAIT_S)


def _preload_after_scan(svc: LibraryService, ids: list[str]) -> None:
    from lorawb_core.refs import resolve_entry

    from .comfy_lora import comfy_loader

    svc.wait()
    paths = []
    for sid in ids:
        try:
            paths.append(svc.with_db(resolve_entry, sid).path)
        except LorawbError as exc:
            log.warning("lorawb: LORAWB_PRELOAD %s: %s", sid, exc)
    for problem in default_cache().preload(paths, comfy_loader):
        log.warning("lorawb: preload: %s", problem)


def start() -> None:
    """Wire the pack into a running ComfyUI; never raises (a broken library must not break ComfyUI's start)."""
    global _last_scan_request
    try:
        svc = service()
        try:
            from server import PromptServer

            instance = getattr(PromptServer, "instance", None)
        except ImportError:
            instance = None
        if instance is not None:
            from lorawb_core.server import register_routes

            register_routes(instance.routes, svc)
        if os.environ.get("LORAWB_AUTOSCAN", "1") != "0":
            _last_scan_request = time.monotonic()
            svc.start_scan()
        ids = preload_ids_from_env()
        if ids:
            threading.Thread(target=_preload_after_scan, args=(svc, ids), name="lorawb-preload", daemon=True).start()
    except Exception:  # noqa: BLE001 - logged; ComfyUI keeps starting
        log.exception("lorawb: could not start the library service")
