"""A scan worker freezes what each file adds to its caches (so the cyclic collector never walks the caches again)
and collects a failed file's garbage first: nothing accumulates in the permanent generation file after file, whether
files read or fail; a host's own process (not a worker) is never frozen."""

from __future__ import annotations

import gc

from library_helpers import tiny

from lorawb_core import file_tasks


def _job(path):
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def test_a_worker_freezes_what_stays_and_nothing_else(tmp_path, monkeypatch):
    good = [tiny(tmp_path / f"g{i}.safetensors", family, seed=i) for i, family in enumerate(["sd15", "sdxl", "flux"])]
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(good[0].read_bytes()[:200])  # a truncated download
    jobs = [_job(p) for p in [*good, broken]]
    monkeypatch.setattr(file_tasks, "_in_worker", True)
    try:
        for _ in range(20):  # caches warm: every later round adds nothing that stays
            results = [file_tasks.analyse(j) for j in jobs]
        assert [r["scan_state"] for r in results] == ["pending", "pending", "pending", "error"]
        frozen = gc.get_freeze_count()
        for _ in range(200):
            for j in jobs:
                file_tasks.analyse(j)
        # no garbage (a failure's cycles included) frozen on the way: a leak would freeze objects every round; the
        # margin is for objects another thread of the test process (a lingering server) may keep meanwhile
        assert gc.get_freeze_count() - frozen < 100
    finally:
        gc.unfreeze()


def test_a_hosts_own_process_is_never_frozen(tmp_path):
    p = tiny(tmp_path / "a.safetensors")
    assert not file_tasks._in_worker
    frozen = gc.get_freeze_count()
    file_tasks.analyse(_job(p))
    assert gc.get_freeze_count() == frozen


def test_a_scan_without_any_scratch_directory_still_scans(tmp_path, monkeypatch):
    """No temporary folder can hold the shared summaries (a full or read-only one): the workers analyse on their own."""
    import contextlib
    import tempfile

    def no_room(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryDirectory", no_room)
    with contextlib.ExitStack() as stack:
        assert file_tasks._shared_summaries_dir(stack) is None
    paths = [tiny(tmp_path / f"{i}.safetensors", "sd15", seed=i) for i in range(4)]
    results = list(file_tasks.run_tasks(file_tasks.analyse, [_job(p) for p in paths], 2, None, 1,
                                        share_summaries=True))
    assert [r["scan_state"] for r in results] == ["pending"] * 4
