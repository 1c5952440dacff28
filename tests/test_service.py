"""LibraryService: a scan that never blocks its caller, one at a time, cancellable, throttled events, errors as data,
a new connection per call and one per thread."""

from __future__ import annotations

import threading
import time

import pytest
from library_helpers import tiny_library

from lorawb_core.service import LibraryService

QUICK = {"workers": 0, "settle_window": 0.0}


class Recorder:
    def __init__(self):
        self.events: list[tuple[str, dict]] = []
        self.lock = threading.Lock()

    def __call__(self, event, data):
        with self.lock:
            self.events.append((event, data))

    def names(self):
        return [e for e, _ in self.events]


@pytest.fixture
def lib(tmp_path):
    tiny_library(tmp_path / "lib", per_folder=3)
    return tmp_path / "lib"


def test_start_scan_returns_at_once_and_reports_progress(tmp_path, lib):
    gate = threading.Event()

    def roots():  # the scan thread asks for the roots: hold it there to prove start_scan does not wait
        gate.wait(10)
        return [str(lib)]

    events = Recorder()
    svc = LibraryService(tmp_path / "db.sqlite3", roots, emit=events, scan_options=QUICK, progress_interval=0.0)
    t = time.perf_counter()
    status = svc.start_scan()
    assert time.perf_counter() - t < 0.5
    assert status["state"] == "running" and status["started"] is True and status["running"] is True
    again = svc.start_scan(full=True)  # one scan at a time
    assert again["started"] is False and again["state"] == "running"
    gate.set()
    assert svc.wait(60)
    final = svc.scan_status()
    assert final["state"] == "done" and final["running"] is False and final["error"] is None
    assert final["summary"]["new"] == 21 and final["summary"]["measured"] == 21 and final["summary"]["errors"] == []
    names = events.names()
    assert names[-1] == "lorawb.scan_done" and names.count("lorawb.scan_done") == 1
    progress = [d for e, d in events.events if e == "lorawb.scan_progress"]
    assert {p["phase"] for p in progress} == {"walk", "structure", "tensors"}
    assert set(progress[0]) == {"phase", "done", "total", "path"}
    last = [p for p in progress if p["phase"] == "tensors"][-1]
    assert last["done"] == last["total"] == 21
    assert events.events[-1][1]["new"] == 21
    svc.close()


def test_progress_events_are_throttled(tmp_path, lib):
    events = Recorder()
    svc = LibraryService(tmp_path / "db.sqlite3", [str(lib)], emit=events, scan_options=QUICK,
                         progress_interval=60.0)
    svc.start_scan()
    assert svc.wait(60)
    progress = [d for e, d in events.events if e == "lorawb.scan_progress"]
    per_phase = {}
    for p in progress:
        per_phase.setdefault(p["phase"], []).append(p)
    for phase, items in per_phase.items():  # the first of a phase and its last step only
        assert len(items) <= 3, (phase, items)
        assert items[-1]["done"] == items[-1]["total"]


def test_cancel_stops_after_the_current_batch(tmp_path, lib):
    svc = LibraryService(tmp_path / "db.sqlite3", [str(lib)], scan_options={**QUICK, "batch_size": 1})
    started = threading.Event()
    original = svc._on_progress

    def slow_progress(p):  # slow the scan down so that cancel lands in the middle
        original(p)
        started.set()
        time.sleep(0.05)

    svc._on_progress = slow_progress
    svc.start_scan()
    assert started.wait(10)
    assert svc.cancel_scan()["state"] in ("cancelling", "done")
    assert svc.wait(60)
    status = svc.scan_status()
    assert status["state"] == "done" and status["summary"]["cancelled"] is True
    assert svc.cancel_scan()["state"] == "done"  # idle: no-op


def test_errors_become_status_and_an_event(tmp_path):
    events = Recorder()
    svc = LibraryService(tmp_path / "db.sqlite3", [], emit=events)
    svc.start_scan()
    assert svc.wait(10)
    status = svc.scan_status()
    assert status["state"] == "error" and "No library roots" in status["error"]
    assert events.events == [("lorawb.scan_error", {"type": "UsageError", "message": status["error"]})]

    def broken_roots():
        raise RuntimeError("boom")

    svc = LibraryService(tmp_path / "db2.sqlite3", broken_roots, emit=events)
    svc.start_scan()
    assert svc.wait(10)
    assert svc.scan_status()["state"] == "error" and "RuntimeError: boom" in svc.scan_status()["error"]


def test_a_broken_event_sink_does_not_stop_the_scan(tmp_path, lib):
    def sink(event, data):
        raise ValueError("sink is broken")

    svc = LibraryService(tmp_path / "db.sqlite3", [str(lib)], emit=sink, scan_options=QUICK)
    svc.start_scan()
    assert svc.wait(60) and svc.scan_status()["state"] == "done"


def test_connections_new_per_call_and_one_per_thread(tmp_path, lib):
    svc = LibraryService(tmp_path / "db.sqlite3", [str(lib)])
    a, b = svc.db(), svc.db()
    assert a is not b and a.conn is not b.conn and "loras" in a.table_names()
    a.close()
    b.close()
    seen = []

    def probe(db):
        seen.append((threading.get_ident(), id(db.conn)))
        return db["loras"].count

    assert svc.with_db(probe) == 0 and svc.with_db(probe) == 0
    assert seen[0] == seen[1]  # same thread, same connection
    futures = [svc.executor.submit(svc.with_db, probe) for _ in range(8)]
    assert [f.result() for f in futures] == [0] * 8
    by_thread = {}
    for tid, conn in seen:
        by_thread.setdefault(tid, set()).add(conn)
    assert all(len(conns) == 1 for conns in by_thread.values())  # never shared across threads
    assert len({c for conns in by_thread.values() for c in conns}) == len(by_thread)
    svc.close()


def test_roots_may_be_a_callable_and_db_path_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAWB_DB", str(tmp_path / "env.sqlite3"))
    folders = ["/a"]
    svc = LibraryService(roots=lambda: folders)
    assert svc.db_path == tmp_path / "env.sqlite3" and svc.db_dir == tmp_path
    folders.append("/b")
    assert svc.roots() == ["/a", "/b"]
    assert svc.scan_status()["state"] == "idle" and svc.wait(0)
