"""POST /lorawb/merge as a background job: the new file's stable ID and report, progress events, refusals."""

from __future__ import annotations

import asyncio

import pytest
from library_helpers import quick_scan, tiny
from ui_helpers import call

from lorawb_core.library.db import open_library
from lorawb_core.service import LibraryService

pytest.importorskip("torch")
pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    base = tmp_path_factory.mktemp("merge_routes")
    lib, db_path = base / "lib", base / "library.sqlite3"
    tiny(lib / "a.safetensors", "sd15", 1)
    tiny(lib / "b.safetensors", "sd15", 2)
    tiny(lib / "xl.safetensors", "sdxl", 3)
    with open_library(db_path) as db:
        quick_scan(db, [lib])
        ids = {r["file_name"]: r["stable_id"] for r in db.query("SELECT file_name, stable_id FROM loras")}
    return {"lib": lib, "db": db_path, "ids": ids}


@pytest.fixture(scope="module")
def events():
    return []


@pytest.fixture(scope="module")
def service(library, events):
    svc = LibraryService(library["db"], [str(library["lib"])], emit=lambda e, d: events.append((e, d)))
    yield svc
    svc.close()


async def finished(client, job: str) -> dict:
    for _ in range(600):
        data = await call(client, "GET", f"/lorawb/merge/{job}", 200)
        if data["state"] != "running":
            return data
        await asyncio.sleep(0.1)
    raise AssertionError(f"merge job {job} did not finish")


async def test_merge_job_writes_indexes_and_reports(client, library, events):
    ids = library["ids"]
    body = {"entries": [{"lora": ids["a.safetensors"], "strength_model": 0.8},
                        {"lora": ids["b.safetensors"], "weights": "IN04=0, default=1"}],
            "filename": "merged/ab", "rank_mode": "rank", "rank": 2}
    started = await call(client, "POST", "/lorawb/merge", 202, body)
    done = await finished(client, started["job"])
    assert done["state"] == "done", done
    assert done["path"] == str(library["lib"] / "merged" / "ab.safetensors")
    assert done["stable_id"] and done["stable_id"] not in ids.values()
    assert done["report"]["mode"] == "rank 2" and done["report"]["module_count"] > 0
    lora = await call(client, "GET", f"/lorawb/loras/{done['stable_id']}", 200)
    assert lora["stable_id"] == done["stable_id"]
    kinds = [e for e, d in events if d.get("job") == started["job"]]
    assert "lorawb.merge_progress" in kinds and kinds[-1] == "lorawb.merge_done"
    again = await call(client, "POST", "/lorawb/merge", 400, body)
    assert "never overwrites" in again["error"]["message"]


async def test_merge_job_reports_a_refused_stack(client, library, events):
    ids = library["ids"]
    body = {"entries": [{"lora": ids["a.safetensors"]}, {"lora": ids["xl.safetensors"]}], "filename": "mixed",
            "rank_mode": "concat"}
    started = await call(client, "POST", "/lorawb/merge", 202, body)
    done = await finished(client, started["job"])
    assert done["state"] == "error" and done["type"] == "IncompatibleStack" and "sdxl" in done["error"]
    assert not (library["lib"] / "mixed.safetensors").exists()
    assert ("lorawb.merge_error", {"job": started["job"], "type": "IncompatibleStack",
                                   "message": done["error"]}) in events


@pytest.mark.parametrize(("body", "field"), [
    ({"entries": [], "filename": "x"}, "entries"),
    ({"entries": [{"lora": "SD1-CHR-001"}]}, "filename"),
    ({"entries": [{"lora": "SD1-CHR-001"}], "filename": "../x"}, "filename"),
    ({"entries": [{"lora": "SD1-CHR-001"}], "filename": "x", "rank_mode": "best"}, "rank_mode"),
    ({"entries": [{"lora": "SD1-CHR-001"}], "filename": "x", "rank": 0}, "rank"),
    ({"entries": [{"lora": "SD1-CHR-001"}], "filename": "x", "dtype": "int8"}, "dtype"),
])
async def test_bad_merge_requests(client, body, field):
    data = await call(client, "POST", "/lorawb/merge", 400, body)
    assert data["error"]["field"] == field, data


async def test_save_combined_profile_route(client, library):
    from lorawb_core.combined_profile import combined_weights
    from lorawb_core.compose import check_stack

    ids = library["ids"]
    entries = [{"lora": ids["a.safetensors"], "strength_model": 0.5},
               {"lora": ids["b.safetensors"], "weights": "OUTD"}]
    saved = await call(client, "POST", "/lorawb/compose/profile", 201, {"entries": entries, "name": "route-mix"})
    with open_library(library["db"]) as db:
        verdict = check_stack(db, entries, directions=False)
    assert saved["layout_id"] == verdict.layout_id == saved["profile"]["layout_id"]
    assert saved["profile"]["weights"] == combined_weights(verdict) and saved["entries"] == 2
    listed = await call(client, "GET", f"/lorawb/profiles?builtins=false&layout={verdict.layout_id}", 200)
    assert "route-mix" in {p["name"] for p in listed["profiles"]}
    again = await call(client, "POST", "/lorawb/compose/profile", 409, {"entries": entries, "name": "route-mix"})
    assert again["error"]["field"] == "name"
    mixed = [{"lora": ids["a.safetensors"]}, {"lora": ids["xl.safetensors"]}]
    refused = await call(client, "POST", "/lorawb/compose/profile", 400, {"entries": mixed, "name": "never"})
    assert refused["error"]["type"] == "IncompatibleStack" and "sdxl LoRA" in refused["error"]["message"]
    for body, field in (({"entries": entries}, "name"), ({"entries": [], "name": "x"}, "entries"),
                        ({"entries": entries, "name": "   "}, "name")):
        data = await call(client, "POST", "/lorawb/compose/profile", 400, body)
        assert data["error"]["field"] == field, data
