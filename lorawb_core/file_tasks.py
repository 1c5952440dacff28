"""The per-file work of a scan, as plain functions that run in worker processes or inline.

Each returns a small picklable dict of ``loras`` column values (plus ``blocks`` for phase (b)), never a report
object: results cross a process boundary and go straight into batched writes. It lives outside the ``library``
package so that a worker process imports only what the per-file work needs (not the database tooling).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from .errors import LorawbError
from .strict_json import finite, finite_json

Job = tuple[str, int, int, int]  # path, size, mtime_ns, inode (as listed)
NO_LAYOUT = "no block layout"  # the one error state whose file can still be applied (uniformly, without blocks)


def _failure(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, LorawbError):
        return {"scan_state": "error", "error": str(exc)}
    return {"scan_state": "error",
            "error": f"lorawb could not analyse this file ({type(exc).__name__}: {exc}); please report it."}


def structure_fields(report) -> dict[str, Any]:
    """``loras`` columns from a :class:`~lorawb_core.inspection.LoraReport` or a
    :class:`~lorawb_core.inspection.StructureSummary` (header facts only)."""
    fam, meta = report.family, report.metadata
    name = meta.title or meta.output_name or Path(report.path).stem
    alpha = report.alpha if report.alpha is not None and math.isfinite(report.alpha) else None
    out: dict[str, Any] = {
        "family": fam.family, "variant": fam.variant, "confidence": fam.confidence,
        "family_evidence": finite_json({"evidence": fam.evidence, "conflicts": fam.conflicts, "reason": fam.reason,
                                    "depth": fam.depth}),
        "format": report.format, "algorithm": next(iter(report.algorithms), None),
        "algorithms": finite_json(report.algorithms), "layout_id": report.layout_id,
        "full_layout_id": report.full_layout_id, "rank": report.rank, "alpha": alpha,
        "module_count": report.module_count, "header_bytes": report.header_bytes, "needs_base": int(report.needs_base),
        "name": name, "sort_key": name.casefold(), "title": meta.title, "author": meta.author,
        "tags": finite_json(meta.tags), "trigger_words": finite_json(report.trigger_words),
        "metadata": meta.to_json(), "problems": finite_json(report.problems),
        "scan_state": "pending", "error": None,
    }
    if report.problems:  # NaN/Inf, factor shapes that do not multiply, rank-0 factors, no LoRA modules
        from .inspection import broken_reason

        out.update(scan_state="error", error=broken_reason(report.problems))
    elif report.layout_id is None:
        why = fam.reason or f"no block layout is known for family '{fam.family}'"
        out.update(scan_state="error", error=f"{NO_LAYOUT}: {why}")
    return out


def _same(path: str, size: int, mtime_ns: int, inode: int) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns, st.st_ino) == (size, mtime_ns, inode)


def analyse(job: Job) -> dict[str, Any]:
    """Phase (a): header only. ``changed`` when the file moved under our feet (it is retried next scan).

    A file phase (b) will measure gets the per-index summary (no alpha: phase (b) writes it, with any problem of
    the alpha values); a file that ends here (no block layout) gets the full header analysis, alphas included.
    """
    from .inspection import inspect_structure, summarize_structure

    path, size, mtime_ns, inode = job
    try:
        report = summarize_structure(path)
        if report.layout_id is None:
            report = inspect_structure(path).report
    except Exception as exc:  # recorded with its reason; retried when the file changes
        name = Path(path).stem  # an unreadable file is listed and sorted by its file name
        _settle_worker_heap(failed=True)
        return {**_failure(exc), "name": name, "sort_key": name.casefold(), "size": size, "mtime_ns": mtime_ns}
    _settle_worker_heap(failed=False)
    if (report.size, report.mtime_ns) != (size, mtime_ns):
        return {"changed": True}
    return {**structure_fields(report), "size": size, "mtime_ns": mtime_ns}


_in_worker = False  # set in scan worker processes (_init_worker), never in a host's own process


def _settle_worker_heap(failed: bool) -> None:
    """In a scan worker, after each file: what the file added to the caches joins the collector's permanent
    generation before the collector ever walks it (walking the caches' young entries cost 13 % of a first file of an
    index, bench_index); the garbage of a failed file (an exception's frames can form cycles) is collected first."""
    if not _in_worker:
        return
    if failed:
        gc.collect(1)  # (young generations only: everything older is frozen)
    gc.freeze()


def measure(job: Job) -> dict[str, Any]:
    """Phase (b): block strengths and hashes; the file must look the same before and after."""
    from .hashes import hash_file
    from .inspection import inspect_structure, measure_blocks
    from .layouts import get_layout

    path, size, mtime_ns, inode = job
    if not _same(path, size, mtime_ns, inode):
        return {"changed": True}
    header: dict[str, Any] = {}
    try:
        analysis = inspect_structure(path)
        header = structure_fields(analysis.report)
        measure_blocks(analysis, spectra=False)
        report = analysis.report
        hashes = hash_file(path, report.header_bytes)
    except Exception as exc:  # what phase (a) leaves to this phase (alpha, its problems) is kept with the error
        kept = {k: header[k] for k in ("alpha", "problems") if k in header}
        return {**_failure(exc), **kept, "size": size, "mtime_ns": mtime_ns} if _same(path, size, mtime_ns, inode) \
            else {"changed": True}
    if not _same(path, size, mtime_ns, inode):  # written to while we read it: the hash is of nothing real
        return {"changed": True}
    out = structure_fields(report)
    out.update(sha256=hashes.sha256, addnet=hashes.addnet, autov2=hashes.autov2, autov3=hashes.autov3,
               total_norm=None, unmapped_norm=None)
    if out["scan_state"] == "pending":  # an error row never carries a strength
        out.update(total_norm=finite(report.total_norm), unmapped_norm=finite(report.unmapped_norm))
        positions = {b: i for i, b in enumerate(get_layout(report.layout_id).block_ids)}
        out["blocks"] = [{"block_id": b.id, "position": positions[b.id], "norm": finite(b.norm),
                          "share": finite(b.share), "module_count": b.module_count, "exact": int(b.exact)}
                         for b in report.blocks or []]
        out["scan_state"] = "ready"
    return out


# ---- worker processes -----------------------------------------------------------------------------------------
def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:  # the scanner died (SIGKILL, host crash): do not linger as an orphan
            os._exit(1)


WORKER_GC_THRESHOLD = 100_000


def _init_worker(parent: int, threads: int = 0, shared_summaries: str | None = None) -> None:
    if threads:  # before torch is imported here; a value the user set is kept
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, str(threads))
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    # A worker allocates millions of short-lived acyclic objects (header entries, module records) beside caches of
    # hundreds of thousands of long-lived ones: at the default threshold (700) the cyclic collector runs every few
    # hundred allocations and keeps walking those caches, a third of the structure phase's time (bench_index). Its
    # garbage is freed by reference counting; the collector still runs, 100x less often.
    gc.set_threshold(WORKER_GC_THRESHOLD, 50, 100)
    if shared_summaries:
        from .inspection.summaries import share_through

        share_through(shared_summaries)
    gc.freeze()  # what the imports built stays out of every collection
    global _in_worker
    _in_worker = True
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _leave_without_teardown, exitpriority=-100)


def _leave_without_teardown() -> None:
    """The worker's last exit step: it has sent every result, and freeing its caches object by object would cost
    more than a second of a large scan (measured: 1.5 s for 10,000 files of 1,000 layouts), so it leaves without
    the interpreter's teardown. Not when it is exiting on an error (that exit code and traceback stay)."""
    if sys.exc_info()[0] is not None:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def make_pool(workers: int, shared_summaries: str | None = None) -> Executor:
    """Worker processes (``spawn``: safe inside a host that holds CUDA or threads). Each worker's torch gets its
    share of the cores: n workers with torch's default of one thread per core each would run n× more threads than
    there are cores (measured: phase (b) twice as slow with 2 workers on 2 cores). ``shared_summaries``: a
    directory through which the workers share their index summaries (``inspection.summaries.share_through``)."""
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(os.getpid(), threads, shared_summaries))


def default_workers(jobs: int, threshold: int = 200) -> int:
    """0 (inline) for small jobs, else up to 2 worker processes (fewer on a 1-core machine)."""
    if jobs < threshold:
        return 0
    return max(0, min(2, (os.cpu_count() or 1)))


def _shared_summaries_dir(stack: contextlib.ExitStack) -> str | None:
    """A private directory, removed with ``stack``, through which a scan's workers share index summaries: in
    RAM-backed ``/dev/shm`` when the system has one (a file created on a journaled disk cost 0.75 ms here, one per
    new tensor index), else in the default temporary folder; None (no sharing, each worker analyses on its own)
    when neither can hold one."""
    shm = "/dev/shm"
    for where in ([shm] if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else []) + [None]:
        try:
            return stack.enter_context(tempfile.TemporaryDirectory(prefix="lorawb-summaries-", dir=where))
        except OSError:
            continue
    return None


def run_tasks(fn: Callable[[Job], dict[str, Any]], jobs: list[Job], workers: int | None,
              cancel: threading.Event | None, chunk: int, share_summaries: bool = False) -> Iterator[dict[str, Any]]:
    """``fn`` over ``jobs``, inline or in worker processes; ``share_summaries``: the workers share their index
    summaries through a private temporary directory (an index one worker analysed, the other reads back)."""
    n = default_workers(len(jobs)) if workers is None else workers
    if n <= 0 or len(jobs) < 2:
        for job in jobs:
            if cancel is not None and cancel.is_set():
                return
            yield fn(job)
        return
    with contextlib.ExitStack() as stack:
        shared = _shared_summaries_dir(stack) if share_summaries else None
        pool = make_pool(min(n, len(jobs)), shared_summaries=shared)
        try:
            chunksize = max(1, min(chunk, len(jobs) // (n * 4)))
            for result in pool.map(fn, jobs, chunksize=chunksize):
                yield result
                if cancel is not None and cancel.is_set():
                    return
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
