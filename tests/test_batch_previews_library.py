"""Previews in the library: scans pick up sidecar images (no generation), the preview route serves them (thumbnails,
confinement to the roots, 404 with the reason), and the search/get JSON says whether a LoRA has one."""

from __future__ import annotations

import os

import pytest
from library_helpers import quick_scan, tiny
from PIL import Image

from lorawb_core.library.db import open_library
from lorawb_core.library.previews import find_sidecar, set_preview
from lorawb_core.library.search import get_lora
from lorawb_core.service import LibraryService


def _png(path, size=(200, 100), color=(10, 200, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


@pytest.fixture
def lib(tmp_path):
    root = tmp_path / "loras"
    tiny(root / "a.safetensors", "sd15", 1)
    tiny(root / "sub/b.safetensors", "sdxl", 2)
    tiny(root / "c.safetensors", "sd15", 3)
    tiny(root / "d.safetensors", "sd15", 4)
    _png(root / "a.preview.png")
    _png(root / "sub/b.png")  # the A1111 / LoRA Manager short form
    (root / "c.preview.webp").parent.mkdir(exist_ok=True)
    Image.new("RGB", (64, 64)).save(root / "c.preview.webp")
    _png(root / "c.png")  # lower priority than c.preview.webp
    db = open_library(tmp_path / "library.sqlite3")
    quick_scan(db, [root], structure_only=True)
    yield {"db": db, "root": root, "path": tmp_path / "library.sqlite3"}
    db.close()


def _previews(db):
    return {os.path.basename(r["path"]): r["preview"] for r in db.query("SELECT path, preview FROM loras")}


def test_scan_records_existing_sidecars_in_priority_order(lib):
    root = lib["root"]
    assert _previews(lib["db"]) == {"a.safetensors": str(root / "a.preview.png"),
                                    "b.safetensors": str(root / "sub/b.png"),
                                    "c.safetensors": str(root / "c.preview.webp"), "d.safetensors": None}
    assert find_sidecar(str(root / "c.safetensors")) == str(root / "c.preview.webp")  # the on-disk lookup agrees


def test_rescan_follows_added_and_removed_previews(lib):
    root = lib["root"]
    os.unlink(root / "a.preview.png")
    _png(root / "d.preview.jpg")
    quick_scan(lib["db"], [root], structure_only=True)
    got = _previews(lib["db"])
    assert got["a.safetensors"] is None and got["d.safetensors"] == str(root / "d.preview.jpg")


def test_entry_and_set_preview(lib):
    db = lib["db"]
    sid = db.execute("SELECT stable_id FROM loras WHERE path LIKE '%d.safetensors'").fetchone()[0]
    assert get_lora(db, sid).preview is None
    set_preview(db, sid, str(lib["root"] / "d.preview.png"))
    assert get_lora(db, sid).to_dict()["preview"] == str(lib["root"] / "d.preview.png")


@pytest.fixture
def service(lib):  # conftest's ``client`` serves every route over it
    svc = LibraryService(lib["path"], [str(lib["root"])], scan_options={"workers": 0, "settle_window": 0.0})
    yield svc
    svc.close()


def _sid(db, name):
    return db.execute("SELECT stable_id FROM loras WHERE file_name = ?", [name]).fetchone()[0]


@pytest.mark.asyncio
async def test_preview_route_serves_image_and_cached_thumbnail(client, lib):
    sid = _sid(lib["db"], "a.safetensors")
    resp = await client.get(f"/lorawb/loras/{sid}/preview")
    assert resp.status == 200 and resp.content_type == "image/png"
    assert await resp.read() == (lib["root"] / "a.preview.png").read_bytes()
    resp = await client.get(f"/lorawb/loras/{sid}/preview?size=50")
    assert resp.status == 200 and resp.content_type in ("image/webp", "image/png")
    import io

    thumb = Image.open(io.BytesIO(await resp.read()))
    assert thumb.size == (50, 25)  # longer side 50, aspect kept
    cached = list((lib["path"].parent / "thumbs").iterdir())
    assert len(cached) == 1
    again = await client.get(f"/lorawb/loras/{sid}/preview?size=50")
    assert again.status == 200 and list((lib["path"].parent / "thumbs").iterdir()) == cached


@pytest.mark.asyncio
async def test_preview_route_404s_with_the_reason(client, lib):
    sid = _sid(lib["db"], "d.safetensors")
    resp = await client.get(f"/lorawb/loras/{sid}/preview")
    assert resp.status == 404 and resp.content_type == "application/json"
    body = await resp.json()
    assert "has no preview image" in body["error"]["message"] and body["error"]["field"] == "stable_id"
    resp = await client.get("/lorawb/loras/SD1-ZZZ-999/preview")
    assert resp.status == 404 and "No LoRA" in (await resp.json())["error"]["message"]
    resp = await client.get(f"/lorawb/loras/{sid}/preview?size=big")
    assert resp.status == 400


@pytest.mark.asyncio
async def test_preview_outside_the_roots_is_not_served(client, lib, tmp_path):
    sid = _sid(lib["db"], "d.safetensors")
    outside = _png(tmp_path / "elsewhere" / "secret.png")
    set_preview(lib["db"], sid, str(outside))
    resp = await client.get(f"/lorawb/loras/{sid}/preview")
    assert resp.status == 404 and "outside the library roots" in (await resp.json())["error"]["message"]
    link = lib["root"] / "d.preview.png"
    link.symlink_to(outside)  # a symlink inside the root pointing out is still outside
    set_preview(lib["db"], sid, str(link))
    resp = await client.get(f"/lorawb/loras/{sid}/preview")
    assert resp.status == 404


@pytest.mark.asyncio
async def test_search_and_details_say_whether_there_is_a_preview(client, lib):
    page = await (await client.get("/lorawb/loras?limit=10")).json()
    flags = {i["file_name"]: i["has_preview"] for i in page["items"]}
    assert flags == {"a.safetensors": True, "b.safetensors": True, "c.safetensors": True, "d.safetensors": False}
    sid = _sid(lib["db"], "a.safetensors")
    details = await (await client.get(f"/lorawb/loras/{sid}")).json()
    assert details["preview"] == str(lib["root"] / "a.preview.png")
