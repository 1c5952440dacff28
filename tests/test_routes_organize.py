"""The organize routes on aiohttp's test client: plan (dry run), a background run with progress events, runs,
reconcile (and its fix), undo, the lock's refusal (409) and bad rules."""

from __future__ import annotations

import asyncio

import pytest
from organize_helpers import make_drop, tree
from ui_helpers import call

from lorawb_core.organize.lock import organize_lock
from lorawb_core.service import LibraryService

pytestmark = pytest.mark.asyncio


@pytest.fixture
def library(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAWB_CONFIG", str(tmp_path / "no-config.json"))
    root = tmp_path / "lib"
    make_drop(root, 3)  # loose files at the top of the root: the default drop
    return {"root": root, "db": tmp_path / "library.sqlite3"}


@pytest.fixture
def events():
    return []


@pytest.fixture
def service(library, events):
    svc = LibraryService(library["db"], [str(library["root"])], emit=lambda e, d: events.append((e, d)))
    yield svc
    svc.close()


async def test_plan_apply_reconcile_undo(client, library, events):
    root = library["root"]
    before = tree(root)
    plan = await call(client, "POST", "/lorawb/organize/plan", 200, {})
    assert [i["verdict"]["verdict"] for i in plan["plan"]["items"]] == ["compatible"] * 3
    assert tree(root) == before
    await call(client, "POST", "/lorawb/organize", 400, {"into": "{family}/{slug}/"})  # no confirm: nothing moves
    assert tree(root) == before
    job = await call(client, "POST", "/lorawb/organize", 202, {"into": "{family}/{slug}/", "confirm": True})
    for _ in range(600):
        status = await call(client, "GET", f"/lorawb/organize/{job['job']}", 200)
        if status["state"] != "running":
            break
        await asyncio.sleep(0.1)
    assert status["state"] == "done", status
    assert status["result"]["organized"] == 3 and (root / "sd15" / "lora_0_ünï" / "config.yaml").exists()
    kinds = [e for e, _ in events]
    assert "lorawb.organize_progress" in kinds and kinds[-1] == "lorawb.organize_done"
    runs = (await call(client, "GET", "/lorawb/organize/runs", 200))["runs"]
    assert runs[0]["kind"] == "organize" and runs[0]["state"] == "done"
    report = await call(client, "GET", "/lorawb/organize/reconcile", 200)
    assert report["ok"] and report["folders"] == 3
    (root / "sd15" / "lora_0_ünï" / "config.yaml").unlink()
    report = await call(client, "GET", "/lorawb/organize/reconcile", 200)
    assert [f["kind"] for f in report["errors"]] == ["missing_config"]
    report = await call(client, "POST", "/lorawb/organize/reconcile", 200, {"fix": True})
    assert report["ok"] and (root / "sd15" / "lora_0_ünï" / "config.yaml").exists()
    await call(client, "POST", "/lorawb/organize/undo", 400, {"run": runs[0]["id"]})
    undone = await call(client, "POST", "/lorawb/organize/undo", 200, {"run": runs[0]["id"], "confirm": True})
    assert undone["undone_run"] == runs[0]["id"] and undone["restored"] == 3 + 2 * 2
    assert all((root / f"lora {i} ünï.safetensors").exists() for i in range(3))


async def test_refusals(client, library):
    await call(client, "POST", "/lorawb/organize/plan", 400, {"into": "{family}/"})
    await call(client, "POST", "/lorawb/organize/plan", 400, {"into": "{nope}/{slug}"})
    await call(client, "POST", "/lorawb/organize/undo", 400, {"run": "x", "confirm": True})
    with organize_lock(str(library["db"]), "organize from a terminal"):
        data = await call(client, "POST", "/lorawb/organize/plan", 409, {})
    assert "another organize is running" in data["error"]["message"]
    await call(client, "GET", "/lorawb/organize/organize-999", 400)
