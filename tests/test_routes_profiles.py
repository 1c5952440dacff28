"""Profile and compose routes on a bare aiohttp app against a real library (every route, every error code)."""

from __future__ import annotations

import pytest
from ui_helpers import call, route_library

from lorawb_core.layouts import get_layout
from lorawb_core.profiles import builtin_profiles, parse_weights
from lorawb_core.service import LibraryService

pytestmark = pytest.mark.asyncio
L17 = "sd15_unet_17"
IDS17 = get_layout(L17).block_ids


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return route_library(tmp_path_factory.mktemp("profiles"))


@pytest.fixture(scope="module")
def service(library):
    svc = LibraryService(library["db"], [str(library["lib"])])
    yield svc
    svc.close()


def error(data, type_, field=None):
    assert data["error"]["type"] == type_, data
    if field is not None:
        assert data["error"].get("field") == field, data
    return data["error"]["message"]


async def test_list_profiles(client):
    data = await call(client, "GET", f"/lorawb/profiles?layout={L17}", 200)
    builtins = [p for p in data["profiles"] if p["builtin"]]
    assert [p["name"] for p in builtins] == [p.name for p in builtin_profiles(L17)]
    assert all(p["id"] is None and p["layout_id"] == L17 and len(p["weights"]) == 17 + 1 for p in builtins)  # + REST
    assert data["dialects"][0] == "ours" and {"lbw", "inspire"} <= set(data["dialects"])
    only_stored = await call(client, "GET", f"/lorawb/profiles?layout={L17}&builtins=0", 200)
    assert all(not p["builtin"] for p in only_stored["profiles"])
    error(await call(client, "GET", "/lorawb/profiles?layout=nope_99", 400), "BadRequest", "layout")
    error(await call(client, "GET", "/lorawb/profiles?builtins=maybe", 400), "BadRequest", "builtins")


async def test_create_read_update_delete(client):
    weights = {b: 1.0 for b in IDS17}
    created = await call(client, "POST", "/lorawb/profiles", 201, {"name": "soft-in", "layout_id": L17,
                                                                   "weights": weights, "description": "test"})
    pid = created["id"]
    assert isinstance(pid, int) and created["source"] == "user" and created["stats"]["mean"] == 1.0
    assert (await call(client, "GET", f"/lorawb/profiles/{pid}", 200))["weights"] == {**weights, "REST": 1.0}

    updated = await call(client, "PUT", f"/lorawb/profiles/{pid}", 200, {"weights": {"IN01": 0.25}})
    assert updated["weights"]["IN01"] == 0.25 and updated["weights"]["IN02"] == 1.0  # partial update
    renamed = await call(client, "PUT", f"/lorawb/profiles/{pid}", 200, {"name": "soft-in-2"})
    assert renamed["name"] == "soft-in-2"
    persisted = await call(client, "GET", f"/lorawb/profiles/{pid}", 200)
    assert persisted["name"] == "soft-in-2" and persisted["weights"]["IN01"] == 0.25

    copy = await call(client, "POST", "/lorawb/profiles", 201, {"name": "soft-copy", "from_id": pid})
    assert copy["id"] != pid and copy["weights"] == persisted["weights"]
    error(await call(client, "PUT", f"/lorawb/profiles/{copy['id']}", 409, {"name": "SOFT-IN-2"}), "Conflict",
          "name")

    assert await call(client, "DELETE", f"/lorawb/profiles/{pid}", 200) == {"deleted": pid}
    error(await call(client, "GET", f"/lorawb/profiles/{pid}", 404), "ProfileNotFound")
    error(await call(client, "DELETE", f"/lorawb/profiles/{pid}", 404), "ProfileNotFound")
    error(await call(client, "PUT", f"/lorawb/profiles/{pid}", 404, {"name": "x1"}), "ProfileNotFound")


async def test_create_as_a_vector_and_name_conflicts(client):
    vec = [0.5] * 17
    created = await call(client, "POST", "/lorawb/profiles", 201, {"name": "half", "layout_id": L17, "weights": vec})
    assert list(created["weights"].values()) == [*vec, 1.0] and list(created["weights"]) == [*IDS17, "REST"]
    error(await call(client, "POST", "/lorawb/profiles", 409, {"name": "HALF", "layout_id": L17, "weights": vec}),
          "Conflict", "name")
    error(await call(client, "POST", "/lorawb/profiles", 409, {"name": "ALL", "layout_id": L17, "weights": vec}),
          "Conflict", "name")  # a built-in's name


@pytest.mark.parametrize(("body", "field"), [
    ({"layout_id": L17, "weights": [1] * 17}, "name"),
    ({"name": "a:b", "layout_id": L17, "weights": [1] * 17}, "name"),
    ({"name": 12, "layout_id": L17, "weights": [1] * 17}, "name"),
    ({"name": "x", "weights": [1] * 17}, "layout_id"),
    ({"name": "x", "layout_id": "sd15_unet_99", "weights": [1] * 17}, "layout_id"),
    ({"name": "x", "layout_id": L17, "weights": [1] * 16}, "weights"),
    ({"name": "x", "layout_id": L17, "weights": {"IN01": 1}}, "weights"),
    ({"name": "x", "layout_id": L17, "weights": [11] + [1] * 16}, "weights"),
    ({"name": "x", "layout_id": L17, "weights": {**{b: 1 for b in IDS17}, "D07": 1}}, "weights"),
    ({"name": "x", "layout_id": L17, "weights": "1,1,1"}, "weights"),
    ({"name": "x", "from_id": "3"}, "from_id"),
    ({"name": "x", "layout_id": L17, "weights": [1] * 17, "description": 5}, "description"),
])
async def test_create_validation_names_the_field(client, body, field):
    error(await call(client, "POST", "/lorawb/profiles", 400, body), "BadRequest", field)


async def test_update_and_id_validation(client):
    pid = (await call(client, "POST", "/lorawb/profiles", 201, {"name": "upd", "layout_id": L17,
                                                                "weights": [1] * 17}))["id"]
    error(await call(client, "PUT", f"/lorawb/profiles/{pid}", 400, {"weights": {"IN01": "high"}}), "BadRequest",
          "weights")
    error(await call(client, "PUT", f"/lorawb/profiles/{pid}", 400, {"weights": {"OUT99": 1}}), "BadRequest",
          "weights")
    error(await call(client, "PUT", f"/lorawb/profiles/{pid}", 400), "BadRequest", "body")
    error(await call(client, "GET", "/lorawb/profiles/abc", 400), "BadRequest", "profile_id")
    error(await call(client, "DELETE", "/lorawb/profiles/-1", 400), "BadRequest", "profile_id")


async def test_import_and_export(client):
    line = "MYLBW:" + ",".join(["1"] + ["0"] * 8 + ["1"] * 8)
    first = await call(client, "POST", "/lorawb/profiles/import", 200, {"text": line})
    assert first["dialect"] == "lbw" and [p["name"] for p in first["created"]] == ["MYLBW"]
    assert first["created"][0]["layout_id"] == L17 and first["saved"] is True
    again = await call(client, "POST", "/lorawb/profiles/import", 200, {"text": line})
    assert again["created"] == [] and "already exists" in again["skipped"][0]["reason"]
    dry = await call(client, "POST", "/lorawb/profiles/import", 200, {"text": line.replace("MYLBW", "DRY"),
                                                                      "dry_run": True})
    assert [p["name"] for p in dry["created"]] == ["DRY"] and dry["saved"] is False
    listed = await call(client, "GET", f"/lorawb/profiles?layout={L17}&builtins=0", 200)
    assert "DRY" not in {p["name"] for p in listed["profiles"]} and "MYLBW" in {p["name"] for p in listed["profiles"]}
    parse_only = await call(client, "POST", "/lorawb/profiles/import", 200, {"text": "OTHER:" + line[6:],
                                                                             "save": False})
    assert parse_only["created"] == [] and parse_only["profiles"][0]["name"] == "OTHER"
    error(await call(client, "POST", "/lorawb/profiles/import", 400, {"text": "   "}), "BadRequest", "text")
    error(await call(client, "POST", "/lorawb/profiles/import", 400, {"text": line, "dialect": "xml"}), "BadRequest",
          "dialect")
    error(await call(client, "POST", "/lorawb/profiles/import", 400, {}), "BadRequest", "text")

    pid = first["created"][0]["id"]
    lbw = await call(client, "POST", "/lorawb/profiles/export", 200, {"dialect": "lbw", "ids": [pid]})
    assert lbw["text"].strip() == line and lbw["count"] == 1
    unsaved = {"name": "draft", "layout_id": L17, "weights": [0.5] * 16 + [2]}
    ours = await call(client, "POST", "/lorawb/profiles/export", 200, {"dialect": "ours", "profiles": [unsaved]})
    back = parse_weights(ours["text"].strip(), layout_id=L17).profile
    assert back.vector() == [0.5] * 16 + [2.0]
    inspire = await call(client, "POST", "/lorawb/profiles/export", 200, {"dialect": "inspire", "profiles": [unsaved]})
    assert inspire["text"].startswith("draft:")
    everything = await call(client, "POST", "/lorawb/profiles/export", 200, {"dialect": "json"})
    assert '"MYLBW"' in everything["text"] and everything["count"] >= 1
    error(await call(client, "POST", "/lorawb/profiles/export", 400, {"dialect": "yaml"}), "BadRequest", "dialect")
    error(await call(client, "POST", "/lorawb/profiles/export", 400, {"dialect": "lbw", "ids": ["1"]}), "BadRequest",
          "ids")
    error(await call(client, "POST", "/lorawb/profiles/export", 400, {"dialect": "lbw", "profiles": [{"name": "x"}]}),
          "BadRequest", "profiles[0]")
    error(await call(client, "POST", "/lorawb/profiles/export", 404, {"dialect": "lbw", "ids": [999999]}),
          "ProfileNotFound")


# ---- compose -----------------------------------------------------------------------------------------------------
async def test_compose_a_compatible_stack(client, library):
    ids = library["ids"]
    a, b = ids["sd15_characters_1.safetensors"], ids["sd15_root_0.safetensors"]
    verdict = await call(client, "POST", "/lorawb/compose/check", 200, {"entries": [
        {"lora": a, "strength_model": 0.8}, {"lora": b, "profile": "ALL · sd15_unet_17"}]})
    assert verdict["ok"] is True and verdict["family"] == "sd15" and verdict["reasons"] == []
    assert [e["stable_id"] for e in verdict["entries"]] == [a, b]
    assert [blk["id"] for blk in verdict["blocks"]] == get_layout(verdict["layout_id"]).block_ids
    assert all(len(blk["contributions"]) == 2 for blk in verdict["blocks"])


async def test_compose_refuses_mixed_families_and_unknown_loras(client, library):
    ids = library["ids"]
    verdict = await call(client, "POST", "/lorawb/compose/check", 200, {"entries": [
        {"lora": ids["sd15_root_1.safetensors"]}, {"lora": ids["flux_styles_0.safetensors"]},
        {"lora": "SDX-CHR-999"}]})
    assert verdict["ok"] is False and len(verdict["reasons"]) == 2 and verdict["blocks"] == []
    assert any("SDX-CHR-999" in r for r in verdict["reasons"])


@pytest.mark.parametrize(("body", "field"), [
    ({}, "entries"), ({"entries": []}, "entries"), ({"entries": [{"strength_model": 1}]}, "entries[0].lora"),
    ({"entries": [{"lora": "SD1-GEN-001"}, "x"]}, "entries[1].lora"),
    ({"entries": [{"lora": "SD1-GEN-001"}] * 17}, "entries"),
    ({"entries": [{"lora": "SD1-GEN-001", "strength_model": "strong"}]}, "entries[0]"),
    ({"entries": [{"lora": "SD1-GEN-001", "profile": "NOPE · sd15_unet_17"}]}, "entries[0].profile"),
    ({"entries": [{"lora": "SD1-GEN-001"}], "threshold": "2"}, "threshold"),
    ({"entries": [{"lora": "SD1-GEN-001"}], "has_clip": 1}, "has_clip"),
])
async def test_compose_validation_names_the_field(client, body, field):
    error(await call(client, "POST", "/lorawb/compose/check", 400, body), "BadRequest", field)


async def test_schedules_travel_with_create_update_and_export(client):
    weights = {b: 1.0 for b in IDS17}
    created = await call(client, "POST", "/lorawb/profiles", 201, {"name": "early", "layout_id": L17,
                                                                   "weights": weights,
                                                                   "schedule": {"IN04": ["1@0-40%"]}})
    assert created["schedule"] == {"IN04": ["1@0-40%"]}
    pid = created["id"]
    kept = await call(client, "PUT", f"/lorawb/profiles/{pid}", 200, {"weights": {"IN01": 0.5}})
    assert kept["schedule"] == {"IN04": ["1@0-40%"]}  # a weights-only update keeps the ranges
    error(await call(client, "PUT", f"/lorawb/profiles/{pid}", 400, {"schedule": {"IN04": ["1@0-40%", "1@30-60%"]}}),
          "BadRequest", "schedule")
    cleared = await call(client, "PUT", f"/lorawb/profiles/{pid}", 200, {"schedule": {}})
    assert "schedule" not in cleared
    out = await call(client, "POST", "/lorawb/profiles/export", 200, {"dialect": "ours", "profiles": [
        {"name": "x", "layout_id": L17, "weights": weights, "schedule": {"OUT03": ["0.5@30-100%"]}}]})
    assert "OUT03=0.5@30-100%" in out["text"]
    await call(client, "DELETE", f"/lorawb/profiles/{pid}", 200)
