"""The job table's state machine and the queue settings, without a server (the runs are in test_batch_queue.py)."""

from __future__ import annotations

import json
import threading

import pytest

from lorawb_core.batch import jobs as J
from lorawb_core.batch.outcome import file_stem
from lorawb_core.batch.servers import DEFAULT_SERVER, normalize_url, queue_settings
from lorawb_core.batch.work import BatchPlan, WorkItem
from lorawb_core.errors import JobNotFound, UsageError
from lorawb_core.library.db import open_library


def plan(keys, groups=None) -> BatchPlan:
    groups = groups or [""] * len(keys)
    return BatchPlan("xy", "t", {"a": 1}, tuple(WorkItem(k, {"1": {"class_type": "X", "inputs": {}}}, "1", group=g)
                                                for k, g in zip(keys, groups, strict=True)))


@pytest.fixture
def db(tmp_path):
    with open_library(tmp_path / "lib.sqlite3") as db:
        yield db


def test_a_plan_becomes_queued_jobs_and_bad_plans_are_refused(db):
    batch = J.add_batch(db, plan(["a", "b"]), "/tmp/out")
    b = J.get_batch(db, batch)
    assert (b.kind, b.spec, b.results_dir, b.total, b.counts["queued"], b.finished) == ("xy", {"a": 1}, "/tmp/out", 2,
                                                                                        2, False)
    assert [j.key for j in J.list_jobs(db, batch_id=batch)] == ["a", "b"]
    with pytest.raises(UsageError, match="repeated: a"):
        J.add_batch(db, plan(["a", "a"]))
    with pytest.raises(UsageError, match="no items"):
        J.add_batch(db, BatchPlan("ab", "empty", {}, ()))
    with pytest.raises(JobNotFound, match="no batch 99"):
        J.get_batch(db, 99)
    with pytest.raises(UsageError, match="unknown job state"):
        J.list_jobs(db, states=["flying"])


def test_claims_keep_a_server_on_its_group_and_steer_others_away(db):
    batch = J.add_batch(db, plan(["1", "2", "3", "4"], ["sdxl", "sd15", "sdxl", "sd15"]))
    first = J.claim(db, "http://a", batch_id=batch)
    assert (first.key, first.state, first.attempts, first.server) == ("1", "submitted", 1, "http://a")
    assert first.prompt_id and first.workflow == {"1": {"class_type": "X", "inputs": {}}}
    assert J.claim(db, "http://b", batch_id=batch, avoid_groups=["sdxl"]).key == "2"
    assert J.claim(db, "http://a", batch_id=batch, prefer_group="sdxl").key == "3"
    assert J.claim(db, "http://a", batch_id=batch, prefer_group="sdxl").key == "4"
    assert J.claim(db, "http://a", batch_id=batch) is None


def test_a_superseded_attempt_cannot_complete_the_job(db):
    batch = J.add_batch(db, plan(["k"]))
    old = J.claim(db, "http://a", batch_id=batch)
    assert J.requeue(db, old, "server died", count=False) == "queued"
    assert J.get_job(db, old.id).attempts == 0  # the attempt was given back
    new = J.claim(db, "http://b", batch_id=batch)
    assert new.prompt_id != old.prompt_id
    assert J.finish(db, old, ["/x.png"]) is False  # the first server finishing late changes nothing
    assert J.finish(db, new, ["/y.png"]) is True
    assert J.finish(db, new, ["/z.png"]) is False  # never completes twice
    job = J.get_job(db, new.id)
    assert (job.state, job.images, job.server) == ("done", ("/y.png",), "http://b")


def test_retries_back_off_then_give_up(db):
    batch = J.add_batch(db, plan(["k"]))
    for attempt in range(1, J.MAX_ATTEMPTS):
        job = J.claim(db, "http://a", batch_id=batch)
        assert job.attempts == attempt
        assert J.requeue(db, job, "503", delay=60 if attempt == 1 else 0) == "queued"
        if attempt == 1:
            assert J.claim(db, "http://a", batch_id=batch) is None  # backing off
            assert 59 < J.next_ready_in(db, batch_id=batch) <= 60
            db.execute("UPDATE jobs SET not_before = 0")
    job = J.claim(db, "http://a", batch_id=batch)
    assert J.requeue(db, job, "503") == "failed"
    assert f"gave up after {J.MAX_ATTEMPTS} attempts" in J.get_job(db, job.id).error
    assert J.get_batch(db, batch).finished


def test_cancel_and_retry(db):
    batch = J.add_batch(db, plan(["a", "b", "c"]))
    flying = J.claim(db, "http://a", batch_id=batch)
    assert [j.id for j in J.cancel(db, batch_id=batch)] == [flying.id]  # the one its server must drop
    assert {j.state for j in J.list_jobs(db, batch_id=batch)} == {"cancelled"}
    assert J.fail(db, flying, "interrupted") is False  # the server's late answer does not undo the cancel
    assert J.retry(db, job_ids=[flying.id]) == 1
    assert J.get_job(db, flying.id).state == "queued" and J.get_job(db, flying.id).attempts == 0
    assert J.retry(db, batch_id=batch) == 2
    with pytest.raises(UsageError):
        J.cancel(db)
    with pytest.raises(JobNotFound):
        J.retry(db, job_ids=[12345])


def test_two_dispatchers_never_claim_the_same_job(tmp_path):
    path = tmp_path / "lib.sqlite3"
    with open_library(path) as db:
        batch = J.add_batch(db, plan([str(i) for i in range(60)]))
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name):
        with open_library(path) as db:
            while (job := J.claim(db, name, batch_id=batch)) is not None:
                with lock:
                    claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"http://{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 60


def test_file_stems_are_safe_and_distinct():
    assert file_stem("SD1-CHR-001") == "SD1-CHR-001"
    a, b = file_stem("x=0.5|y=OUTD"), file_stem("x=0.5/y=OUTD")
    assert a != b and "/" not in a + b and "|" not in a and a.startswith("x=0.5_y=OUTD-")
    assert file_stem("../..") not in ("", ".", "..") and "/" not in file_stem("../..")


def test_server_settings_precedence(tmp_path, monkeypatch):
    cfg = tmp_path / "config.json"
    monkeypatch.setenv("LORAWB_CONFIG", str(cfg))
    monkeypatch.delenv("LORAWB_SERVERS", raising=False)
    monkeypatch.delenv("LORAWB_BATCH_BACKEND", raising=False)
    assert queue_settings().urls == [DEFAULT_SERVER]
    cfg.write_text(json.dumps({"servers": ["127.0.0.1:8190", {"url": "http://127.0.0.1:8191/", "num_gpus": 1}],
                               "batch_backend": "ray", "jobs_in_flight": 3}))
    s = queue_settings()
    assert s.urls == ["http://127.0.0.1:8190", "http://127.0.0.1:8191"] and s.servers[1].resources == {"num_gpus": 1}
    assert (s.backend, s.in_flight) == ("ray", 3)
    monkeypatch.setenv("LORAWB_SERVERS", "http://127.0.0.1:9000, http://127.0.0.1:9001")
    assert queue_settings().urls == ["http://127.0.0.1:9000", "http://127.0.0.1:9001"]
    assert queue_settings(["127.0.0.1:7000"], backend="builtin").urls == ["http://127.0.0.1:7000"]
    with pytest.raises(UsageError, match="not a ComfyUI server URL"):
        normalize_url("ftp://x y")
    with pytest.raises(UsageError, match="unknown batch backend"):
        queue_settings(backend="celery")
    with pytest.raises(UsageError, match="1 to 64"):
        queue_settings(in_flight=0)
