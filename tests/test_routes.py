"""HTTP routes on a bare aiohttp app (no ComfyUI), against a real SQLite library of real-format LoRA files."""

from __future__ import annotations

import csv
import io
import logging
import sys

import pytest
from aiohttp import web
from ui_helpers import XSS_TITLE, XSS_TRIGGER, route_library

from lorawb_core.layouts import get_layout, list_layouts
from lorawb_core.server.http import Security
from lorawb_core.server.routes import ROUTES, register_routes
from lorawb_core.service import LibraryService

pytestmark = pytest.mark.asyncio
SCAN_OPTIONS = {"workers": 0, "settle_window": 0.0}


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return route_library(tmp_path_factory.mktemp("routes"))


@pytest.fixture(scope="module")
def service(library):
    svc = LibraryService(library["db"], [str(library["lib"])], scan_options=SCAN_OPTIONS)
    yield svc
    svc.close()


async def get_json(client, url, status=200):
    resp = await client.get(url)
    assert resp.status == status, (url, resp.status, await resp.text())
    assert resp.content_type == "application/json"
    return await resp.json()


def assert_error(body, type_=None, field=None):
    assert set(body) == {"error"} and body["error"]["message"]
    if type_:
        assert body["error"]["type"] == type_, body
    if field:
        assert body["error"]["field"] == field, body


# ---- info, search, facets ------------------------------------------------------------------------------------
async def test_info_counts(client, library):
    info = await get_json(client, "/lorawb/info")
    assert info["counts"] == {"total": 18, "present": 18, "missing": 0, "ready": 16, "pending": 1, "error": 1}
    assert info["roots"] == [str(library["lib"])] and info["database"] == "library.sqlite3"
    assert info["token_required"] is False and info["scan"]["state"] == "idle"
    assert set(info) == {"version", "database", "roots", "counts", "token_required", "scan"}


async def test_search_lists_pages_and_sparklines(client, library):
    page = await get_json(client, "/lorawb/loras?limit=5")
    assert page["total"] == 18 and page["limit"] == 5 and len(page["items"]) == 5
    names = [i["name"] for i in page["items"] if i["name"] is not None]  # the unreadable file has no name
    assert names == sorted(names, key=str.casefold)
    rest = await get_json(client, "/lorawb/loras?limit=50&offset=5")
    assert len(rest["items"]) == 13 and not {i["stable_id"] for i in rest["items"]} & {i["stable_id"] for i in
                                                                                       page["items"]}
    everything = {i["stable_id"]: i for i in page["items"] + rest["items"]}
    ready = everything[library["ids"]["sdxl_outfits_0.safetensors"]]
    assert ready["blocks_state"] == "ready" and len(ready["spark"]) == len(get_layout(ready["layout_id"]).blocks)
    assert abs(sum(ready["spark"]) - 1.0) < 0.01
    pending = everything[library["ids"]["pending_flux.safetensors"]]
    assert pending["blocks_state"] == "pending" and pending["spark"] is None
    nospark = await get_json(client, "/lorawb/loras?limit=50&spark=0")
    assert all(i["spark"] is None for i in nospark["items"])


@pytest.mark.parametrize(("query", "expect"), [
    ("family=flux", lambda i: i["family"] == "flux"),
    ("layout=sdxl_unet_12", lambda i: i["layout_id"] == "sdxl_unet_12"),
    ("format=kohya&family=wan", lambda i: i["family"] == "wan" and i["format"] == "kohya"),
    ("state=pending", lambda i: i["blocks_state"] == "pending"),
    ("state=error", lambda i: i["scan_state"] == "error" and i["error"]),
    ("q=outfits", lambda i: "outfits" in i["file_name"]),
    ("q=flux&family=flux&sort=size&desc=1", lambda i: i["family"] == "flux"),
])
async def test_search_filters(client, query, expect):
    page = await get_json(client, f"/lorawb/loras?{query}&limit=100")
    assert page["items"] and all(expect(i) for i in page["items"]), page["items"]
    assert page["total"] == len(page["items"])


async def test_search_sorts_missing_and_duplicates(client, library):
    by_size = await get_json(client, "/lorawb/loras?sort=size&desc=true&limit=100")
    sizes = [i["size"] for i in by_size["items"]]
    assert sizes == sorted(sizes, reverse=True)
    assert (await get_json(client, "/lorawb/loras?show=missing"))["total"] == 0
    assert (await get_json(client, "/lorawb/loras?show=all"))["total"] == 18
    dup = await get_json(client, "/lorawb/loras?duplicates=1")
    assert {i["file_name"] for i in dup["items"]} == {"copy_of_first.safetensors", "sd15_characters_0.safetensors"}


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"), ("limit=501", "limit"), ("limit=ten", "limit"), ("offset=-1", "offset"),
    ("sort=random", "sort"), ("state=done", "state"), ("show=some", "show"), ("desc=maybe", "desc"),
    ("q=" + "x" * 501, "q"), ("family=" + "f" * 201, "family"),
])
async def test_search_bad_parameters_name_the_field(client, query, field):
    assert_error(await get_json(client, f"/lorawb/loras?{query}", 400), "BadRequest", field)


async def test_facets(client):
    f = await get_json(client, "/lorawb/facets")
    assert f["family"] == {"flux": 5, "sd15": 6, "sdxl": 4, "wan": 2}
    assert f["state"] == {"error": 1, "pending": 1, "ready": 16} and f["missing"] == 0
    assert "sdxl_unet_12" in f["layout"] and "kohya" in f["format"]


# ---- one LoRA --------------------------------------------------------------------------------------------------
async def test_one_lora_with_its_blocks(client, library):
    sid = library["ids"]["flux_styles_0.safetensors"]
    lora = await get_json(client, f"/lorawb/loras/{sid}")
    layout = get_layout(lora["layout_id"])
    assert lora["stable_id"] == sid and lora["family"] == "flux" and lora["blocks_state"] == "ready"
    assert [b["id"] for b in lora["blocks"]] == layout.block_ids
    assert {b["group"] for b in lora["blocks"]} == {b.group for b in layout.blocks}
    assert lora["family_evidence"]["evidence"] and lora["sha256"] and lora["autov2"]
    assert (await get_json(client, f"/lorawb/loras/{sid.lower()}"))["stable_id"] == sid  # IDs are case-blind

    blocks = await get_json(client, f"/lorawb/loras/{sid}/blocks")
    assert blocks["layout"]["id"] == layout.id and len(blocks["blocks"]) == len(layout.blocks) == 61
    assert blocks["blocks_state"] == "ready" and blocks["total_norm"] > 0
    assert abs(sum(b["share"] for b in blocks["blocks"]) - 1.0) < 1e-3


async def test_pending_lora_has_a_layout_but_no_blocks(client, library):
    sid = library["ids"]["pending_flux.safetensors"]
    blocks = await get_json(client, f"/lorawb/loras/{sid}/blocks")
    assert blocks["blocks_state"] == "pending" and blocks["blocks"] is None and blocks["layout"]["count"] == 61
    assert_error(await get_json(client, f"/lorawb/loras/{sid}/blocks.csv", 409), "Conflict", "stable_id")


async def test_blocks_csv(client, library):
    sid = library["ids"]["sdxl_outfits_1.safetensors"]
    resp = await client.get(f"/lorawb/loras/{sid}/blocks.csv")
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert f'filename="{sid}-blocks.csv"' in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    lora = await get_json(client, f"/lorawb/loras/{sid}")
    assert [r["block_id"] for r in rows] == get_layout(lora["layout_id"]).block_ids
    assert {r["stable_id"] for r in rows} == {sid}
    assert abs(sum(float(r["share"]) for r in rows) - 1.0) < 1e-3


async def test_metadata_and_trigger_words_come_back_verbatim(client, library):
    sid = library["ids"]["xss_title.safetensors"]
    meta = await get_json(client, f"/lorawb/loras/{sid}/metadata")
    assert meta["title"] == XSS_TITLE and meta["name"] == XSS_TITLE  # data, not markup: the UI escapes it
    assert XSS_TRIGGER in meta["trigger_words"]
    assert meta["trigger_details"][0]["word"] == XSS_TRIGGER and meta["family_evidence"]["evidence"]
    assert meta["metadata"]["output_name"] == XSS_TITLE


@pytest.mark.parametrize("path", ["/lorawb/loras/{sid}", "/lorawb/loras/{sid}/blocks", "/lorawb/loras/{sid}/metadata",
                                  "/lorawb/loras/{sid}/blocks.csv"])
async def test_unknown_and_malformed_ids(client, path):
    assert_error(await get_json(client, path.format(sid="SDX-CHR-999"), 404), "NotInLibrary")
    assert_error(await get_json(client, path.format(sid="not_an_id!"), 400), "BadRequest", "stable_id")


async def test_duplicates(client, library):
    groups = (await get_json(client, "/lorawb/duplicates"))["groups"]
    assert len(groups) == 1 and len(groups[0]["addnet"]) == 64
    assert {i["stable_id"] for i in groups[0]["items"]} == {library["ids"]["copy_of_first.safetensors"],
                                                            library["ids"]["sd15_characters_0.safetensors"]}


async def test_reindex_one_lora(client, library):
    sid = library["ids"]["wan_video_1.safetensors"]
    resp = await client.post(f"/lorawb/loras/{sid}/reindex", json={"structure_only": False})
    assert resp.status == 200
    body = await resp.json()
    assert body["lora"]["stable_id"] == sid and body["lora"]["blocks_state"] == "ready"
    assert body["summary"]["files"] == 1 and not body["summary"]["errors"]
    resp = await client.post(f"/lorawb/loras/{sid}/reindex")  # no body: defaults
    assert resp.status == 200
    assert_error(await (await client.post("/lorawb/loras/SDX-CHR-999/reindex")).json(), "NotInLibrary")
    bad = await client.post(f"/lorawb/loras/{sid}/reindex", json={"structure_only": "yes"})
    assert bad.status == 400
    assert_error(await bad.json(), "BadRequest", "structure_only")


# ---- layouts and cache -----------------------------------------------------------------------------------------
async def test_layouts_registry(client):
    layouts = (await get_json(client, "/lorawb/layouts"))["layouts"]
    assert [x["id"] for x in layouts] == [x.id for x in list_layouts()]
    one = await get_json(client, "/lorawb/layouts/sdxl_unet_12")
    assert one == get_layout("sdxl_unet_12").to_dict() and one["count"] == 12
    assert {"id", "label", "group"} == set(one["blocks"][0])
    assert_error(await get_json(client, "/lorawb/layouts/sdxl_unet_99", 404), "UnknownLayout")
    assert_error(await get_json(client, "/lorawb/layouts/Bad%20Id", 400), "BadRequest", "layout_id")


async def test_cache_stats_and_clear(client):
    stats = await get_json(client, "/lorawb/cache")
    assert isinstance(stats, dict) and stats
    resp = await client.delete("/lorawb/cache")
    assert resp.status == 200
    body = await resp.json()
    assert body["cleared"] is True and isinstance(body["stats"], dict)


# ---- errors ----------------------------------------------------------------------------------------------------
async def test_unexpected_errors_are_500_with_a_generic_message(client, monkeypatch, caplog):
    search_module = sys.modules["lorawb_core.library.search"]  # the package exports a function of that name

    def boom(*a, **k):
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(search_module, "search", boom)
    with caplog.at_level(logging.ERROR, logger="lorawb"):
        body = await get_json(client, "/lorawb/loras", 500)
    assert body == {"error": {"type": "InternalError",
                              "message": "Internal error in lorawb; the server log has the details."}}
    assert "secret internals" in caplog.text  # logged with the traceback, never sent


async def test_registers_on_a_route_table_def_with_bare_paths(aiohttp_client, service):
    routes = web.RouteTableDef()  # what ComfyUI's PromptServer.instance.routes is
    table = register_routes(routes, service, security=Security())
    assert all(r.path.startswith("/lorawb/") for r in table) and not any(r.path.startswith("/api") for r in table)
    assert len(list(routes)) == len(table) == len(ROUTES)
    app = web.Application()
    app.add_routes(routes)
    client = await aiohttp_client(app)
    assert (await get_json(client, "/lorawb/layouts/flux_dit_61"))["count"] == 61
    with pytest.raises(TypeError):
        register_routes(object(), service)
