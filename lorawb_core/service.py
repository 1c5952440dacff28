"""The library as a long-lived service: one background scan at a time, progress events, a connection per thread.

The HTTP routes (:mod:`lorawb_core.server`) and ComfyUI's start-up both talk to a :class:`LibraryService`:

>>> service = LibraryService("/data/lorawb/library.sqlite3", ["/data/loras"], emit=print)   # doctest: +SKIP
>>> service.start_scan()            # returns at once; the scan runs in a daemon thread       # doctest: +SKIP
{'state': 'running', 'phase': None, 'done': 0, 'total': 0, ...}
>>> service.wait(60)                                                                           # doctest: +SKIP
True

Events go through ``emit(event, data)`` (inside ComfyUI ``PromptServer.instance.send_sync``; standalone the
server-sent-events hub of ``lorawb serve``): ``lorawb.scan_progress`` ``{phase, done, total, path}`` (at most a few
per second, phase changes and the last step always), ``lorawb.scan_done`` (the scan summary) and ``lorawb.scan_error``
``{type, message}``. SQLite connections never cross threads: :meth:`LibraryService.db` opens a new one per call and
:meth:`LibraryService.with_db` runs a function with the calling thread's own connection (the route executor's
threads keep one each).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database

from .errors import LorawbError, UsageError

log = logging.getLogger("lorawb")

T = TypeVar("T")
Emit = Callable[[str, dict], None]
SUMMARY_LIST_LIMIT = 50  # list fields of a summary sent in events and status (counts stay exact)
STATES = ("idle", "running", "cancelling", "done", "error")


def summary_to_dict(summary: Any, limit: int = SUMMARY_LIST_LIMIT) -> dict[str, Any]:
    """A :class:`~lorawb_core.library.ScanSummary` as JSON-able data, long lists cut to ``limit`` items (the full
    length is kept as ``<name>_count``)."""
    d = asdict(summary)
    for key, value in list(d.items()):
        if isinstance(value, list):
            d[f"{key}_count"] = len(value)
            d[key] = value[:limit]
    return d


class LibraryService:
    """Owns the library database path, the roots, the background scan and its events.

    Args:
        db_path: the SQLite file; None means :func:`lorawb_core.library.default_db_path`.
        roots: library folders, or a callable returning them (ComfyUI's ``loras`` folders can change at run time).
        emit: ``emit(event, data)``, called from the scan thread; exceptions it raises are logged and ignored.
        categories: extra folder → category mapping for new stable IDs (the config file's ``categories``).
        scan_options: extra keyword arguments for :func:`lorawb_core.library.scan` (``workers``, ``settle_window``,
            ``ledger`` …).
        progress_interval: minimum seconds between two ``lorawb.scan_progress`` events of the same phase.
    """

    def __init__(self, db_path: str | os.PathLike[str] | None = None,
                 roots: Sequence[str] | Callable[[], Sequence[str]] = (), *, emit: Emit | None = None,
                 categories: dict | None = None, scan_options: dict[str, Any] | None = None,
                 progress_interval: float = 0.25, db_threads: int = 4) -> None:
        from .library.config import default_db_path

        self.db_path = Path(db_path) if db_path is not None else default_db_path()
        self._roots = roots
        self._emit = emit
        self.categories = dict(categories or {})
        self.scan_options = dict(scan_options or {})
        self.progress_interval = progress_interval
        self.executor = ThreadPoolExecutor(max_workers=db_threads, thread_name_prefix="lorawb-db")
        self._lock = threading.Lock()
        self._migrate_lock = threading.Lock()
        self._migrated = False
        self._local = threading.local()
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._last_emit: dict[str, float] = {}
        self._status: dict[str, Any] = {"state": "idle", "phase": None, "done": 0, "total": 0, "path": None,
                                        "full": False, "structure_only": False, "started_at": None,
                                        "finished_at": None, "summary": None, "error": None}

    # ---- configuration ----------------------------------------------------------------------------------------
    @property
    def db_dir(self) -> Path:
        return self.db_path.parent

    def roots(self) -> list[str]:
        """The library roots now (the callable is asked each time)."""
        roots = self._roots() if callable(self._roots) else self._roots
        return [os.fspath(r) for r in roots or ()]

    # ---- connections ------------------------------------------------------------------------------------------
    def db(self) -> Database:
        """A NEW connection to the library (migrated the first time); the caller closes it, in its own thread."""
        from .library import open_library
        from .library.db import connect

        with self._migrate_lock:
            if not self._migrated:
                db = open_library(self.db_path)
                self._migrated = True
                return db
        return connect(self.db_path)

    def with_db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(db, *args, **kwargs)`` with this thread's own connection (opened on first use, kept)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self.db()
        try:
            return fn(db, *args, **kwargs)
        except sqlite3.ProgrammingError:  # closed under us (close()): one fresh connection, one retry
            self._local.db = db = self.db()
            return fn(db, *args, **kwargs)
        finally:
            if db.conn.in_transaction:  # a failed write must not leave this thread's connection holding locks
                db.conn.rollback()

    # ---- scanning ---------------------------------------------------------------------------------------------
    def scan_status(self) -> dict[str, Any]:
        """``state`` idle|running|cancelling|done|error, ``phase``, ``done``, ``total``, ``path``, the last
        ``summary`` (dict) and ``error``; plus ``roots``."""
        with self._lock:
            status = dict(self._status)
        status["running"] = status["state"] in ("running", "cancelling")
        return status

    def start_scan(self, *, full: bool = False, structure_only: bool = False) -> dict[str, Any]:
        """Start a scan in a daemon thread unless one is running; never blocks. Returns the status, with
        ``started`` telling whether this call started it."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                status = dict(self._status)
                status.update(running=True, started=False)
                return status
            self._cancel = threading.Event()
            self._last_emit.clear()
            self._status.update(state="running", phase=None, done=0, total=0, path=None, full=bool(full),
                                structure_only=bool(structure_only), started_at=time.time(), finished_at=None,
                                error=None)
            self._thread = threading.Thread(target=self._run_scan, args=(bool(full), bool(structure_only)),
                                            name="lorawb-scan", daemon=True)
            self._thread.start()
            status = dict(self._status)
        status.update(running=True, started=True)
        return status

    def cancel_scan(self) -> dict[str, Any]:
        """Ask the running scan to stop after its current batch (what it did is kept); no-op when idle."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._cancel.set()
                self._status["state"] = "cancelling"
        return self.scan_status()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running scan; True when no scan runs any more."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Cancel a running scan, wait for it a little, stop the connection threads."""
        self.cancel_scan()
        self.wait(timeout)
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _run_scan(self, full: bool, structure_only: bool) -> None:
        from .library import scan

        try:
            roots = self.roots()
            if not roots:
                raise UsageError("No library roots: start lorawb serve with --root DIR (or list \"roots\" in the "
                                 "lorawb config file); inside ComfyUI the roots are its loras folders.")
            db = self.db()
            try:
                summary = scan(db, roots, full=full, structure_only=structure_only, progress=self._on_progress,
                               cancel=self._cancel, categories=self.categories, **self.scan_options)
            finally:
                db.close()
        except Exception as exc:  # the thread reports every failure as data; nothing escapes it
            if isinstance(exc, LorawbError):
                message = str(exc)
            else:
                log.exception("lorawb: the library scan failed")
                message = f"the library scan failed ({type(exc).__name__}: {exc}); see the server log."
            with self._lock:
                self._status.update(state="error", error=message, finished_at=time.time())
            self._send("lorawb.scan_error", {"type": type(exc).__name__, "message": message})
            return
        data = summary_to_dict(summary)
        with self._lock:
            self._status.update(state="done", summary=data, finished_at=time.time(), path=None)
        self._send("lorawb.scan_done", data)

    def _on_progress(self, p: Any) -> None:
        with self._lock:
            previous = self._status.get("phase")
            self._status.update(phase=p.phase, done=p.done, total=p.total, path=p.path)
        now = time.monotonic()
        last = self._last_emit.get(p.phase)
        if p.phase != previous or last is None or p.done >= p.total or now - last >= self.progress_interval:
            self._last_emit[p.phase] = now
            self._send("lorawb.scan_progress", {"phase": p.phase, "done": p.done, "total": p.total, "path": p.path})

    def _send(self, event: str, data: dict) -> None:
        if self._emit is None:
            return
        try:
            self._emit(event, data)
        except Exception:  # a broken event sink must not stop the scan
            log.exception("lorawb: could not send the %s event", event)
