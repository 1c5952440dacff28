"""Planning routes on a bare aiohttp app over a real library: dry runs for the dialogs, queueing into the real job
table, the preview settings (validated, saved atomically), finishing refused while jobs are left."""

from __future__ import annotations

import json

import pytest
from library_helpers import quick_scan, tiny
from ui_helpers import free_port

from lorawb_core.library.db import open_library
from lorawb_core.service import LibraryService

pytestmark = pytest.mark.asyncio


@pytest.fixture
def lib(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAWB_PREVIEW_CONFIG", str(tmp_path / "preview_config.json"))
    monkeypatch.setenv("LORAWB_CONFIG", str(tmp_path / "config.json"))
    # the runner the queueing route starts finds no server here (a closed loopback port): the jobs stay queued
    monkeypatch.setenv("LORAWB_SERVERS", f"http://127.0.0.1:{free_port()}")
    (tmp_path / "preview_config.json").write_text(json.dumps({"defaults": {"checkpoint": "tiny.safetensors"}}))
    root = tmp_path / "loras"
    tiny(root / "a.safetensors", "sd15", 1)
    tiny(root / "w.safetensors", "wan", 2)
    with open_library(tmp_path / "library.sqlite3") as db:
        quick_scan(db, [root])
        ids = {r["file_name"]: r["stable_id"] for r in db.query("SELECT file_name, stable_id FROM loras")}
    return {"path": tmp_path / "library.sqlite3", "root": root, "ids": ids, "tmp": tmp_path}


@pytest.fixture
def service(lib):
    svc = LibraryService(lib["path"], [str(lib["root"])], scan_options={"workers": 0, "settle_window": 0.0})
    yield svc
    svc.close()


async def post(client, url, body, status=200):
    resp = await client.post(url, json=body)
    data = await resp.json()
    assert resp.status == status, (url, resp.status, data)
    return data


async def test_dry_runs_show_cells_and_skipped_loras(client, lib):
    a, w = lib["ids"]["a.safetensors"], lib["ids"]["w.safetensors"]
    data = await post(client, "/lorawb/plans/previews", {"ids": [a, w, "SD1-ZZZ-404"], "dry_run": True,
                                                         "overrides": {"steps": 3}})
    plan = data["plan"]
    assert data["batch"] is None and plan["kind"] == "preview" and plan["count"] == 1
    assert plan["items"][0]["key"] == a and plan["items"][0]["params"]["steps"] == 3
    assert [s["item"] for s in plan["skipped"]] == ["SD1-ZZZ-404", w]
    data = await post(client, "/lorawb/plans/xy", {"stack": [a], "x": "strength=0,1", "y": "seed=1,2",
                                                   "dry_run": True})
    assert [i["key"] for i in data["plan"]["items"]] == ["x=0|y=1", "x=1|y=1", "x=0|y=2", "x=1|y=2"]
    data = await post(client, "/lorawb/plans/xy", {"stack": [a], "ablate": "solo", "dry_run": True})
    assert data["plan"]["kind"] == "ablation" and data["plan"]["items"][0]["key"] == "ALL"
    data = await post(client, "/lorawb/plans/ab", {"stack": [f"{a}:0.5"], "profiles": "ALL,OUTD", "dry_run": True})
    assert data["plan"]["count"] == 2


async def test_bad_plans_are_400_with_the_reason(client, lib):
    a = lib["ids"]["a.safetensors"]
    body = await post(client, "/lorawb/plans/xy", {"stack": [a], "x": "colour=red"}, 400)
    assert "NAME one of strength" in body["error"]["message"]
    body = await post(client, "/lorawb/plans/xy", {"stack": [a]}, 400)
    assert body["error"]["field"] == "x"
    body = await post(client, "/lorawb/plans/previews", {"ids": [a], "overrides": {"width": 7}}, 400)
    assert "multiple of 8" in body["error"]["message"]
    body = await post(client, "/lorawb/plans/previews", {"ids": [a], "template": {"1": {"class_type": "SaveImage",
                                                                                          "inputs": {}}}}, 400)
    assert "has no lorawb loader node" in body["error"]["message"]
    seeds = ",".join(str(i) for i in range(65))
    body = await post(client, "/lorawb/plans/xy", {"stack": [a], "x": f"seed={seeds}"}, 400)
    assert "over the limit of 64" in body["error"]["message"]


async def test_queueing_puts_the_plan_in_the_job_table(client, lib):
    a = lib["ids"]["a.safetensors"]
    data = await post(client, "/lorawb/plans/xy", {"stack": [a], "x": "strength=0,0.5,1"})
    batch = data["batch"]
    assert batch["kind"] == "xy" and batch["total"] == 3 and data["plan"]["count"] == 3
    resp = await client.get(f"/lorawb/jobs?batch={batch['id']}")
    jobs = (await resp.json())["jobs"]
    assert [j["key"] for j in jobs] == ["x=0", "x=0.5", "x=1"]
    assert all(j["state"] in ("queued", "submitted", "running") for j in jobs)  # no server answers here
    body = await post(client, f"/lorawb/batches/{batch['id']}/finish", {}, 400)
    assert "still has 3 job(s) to run" in body["error"]["message"]


async def test_batch_settings_round_trip_and_validation(client, lib):
    resp = await client.get("/lorawb/batch-settings")
    data = await resp.json()
    assert data["config"]["defaults"] == {"checkpoint": "tiny.safetensors"}
    assert data["resolved"]["flux"]["cfg"] == 1.0 and data["resolved"]["sd15"]["width"] == 640
    assert "wan" not in data["resolved"] and data["placeholders"] == ["{triggers}", "{name}"]
    new = {"defaults": {"prompt": "{triggers}, photo"}, "families": {"sdxl": {"checkpoint": "xl.safetensors"}}}
    resp = await client.put("/lorawb/batch-settings", json=new)
    assert resp.status == 200, await resp.text()
    saved = json.loads((lib["tmp"] / "preview_config.json").read_text())
    assert saved == {"defaults": {"prompt": "{triggers}, photo"},
                     "families": {"sdxl": {"checkpoint": "xl.safetensors"}}}
    resp = await client.put("/lorawb/batch-settings", json={"families": {"sdxl": {"steps": "lots"}}})
    assert resp.status == 400 and "steps must be a whole number" in (await resp.json())["error"]["message"]
    assert json.loads((lib["tmp"] / "preview_config.json").read_text()) == saved  # nothing lost
