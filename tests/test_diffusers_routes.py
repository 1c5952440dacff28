"""``POST /lorawb/generate`` through aiohttp's test client: a tiny SD 1.5 pipeline, a real scanned library, one
request at a time per pipeline, 429 when the queue is full, a disconnected client's queued request dropped."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import threading

import numpy as np
import pytest
import pytest_asyncio

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from diffusers_tiny import tiny_sd15, write_lora  # noqa: E402

pytestmark = pytest.mark.asyncio
PAST = 1_700_000_000 * 10**9
BASE = {"prompt": "a red cube", "steps": 2, "width": 16, "height": 16, "seed": 5}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from lorawb_core.service import LibraryService

    base = tmp_path_factory.mktemp("genroute")
    root = base / "loras"
    files = [write_lora("sd15", root / "characters", "hero", seed=1), write_lora("sd15", root / "styles", "ink", seed=2),
             write_lora("sdxl", root / "styles", "xl", seed=3)]
    for f in files:
        os.utime(f, ns=(PAST, PAST))
    library = LibraryService(str(base / "library.sqlite3"), [str(root)])
    library.start_scan()
    assert library.wait(120)
    ids = dict(library.with_db(lambda db: [(r[1], r[0]) for r in db.execute("SELECT stable_id, name FROM loras")]))
    pipe = tiny_sd15()
    pipe.set_progress_bar_config(disable=True)
    yield {"library": library, "ids": ids, "pipe": pipe, "files": files}
    library.close()


@pytest_asyncio.fixture
async def make_client(aiohttp_client, world):
    from aiohttp import web

    from lorawb_core.cache import LoraCache
    from lorawb_core.diffusers_host.server import GenerationService, register_generate_routes
    from lorawb_core.server.http import Security
    from lorawb_core.server.routes import register_routes

    made = []

    async def make(queue_size=4, on_step=None, security=None):
        security = security or Security()
        gen = GenerationService(world["pipe"], world["library"], cache=LoraCache(64 << 20), queue_size=queue_size,
                                on_step=on_step)
        app = web.Application()
        register_routes(app, world["library"], security=security)
        register_generate_routes(app, gen, security=security)
        made.append(gen)
        return await aiohttp_client(app), gen

    return make


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _solo(world, loras):
    """The image of one run on the same pipeline, outside the service."""
    from lorawb_core.diffusers_host import DiffusersHost, specs_from_request
    from lorawb_core.diffusers_host.generate import GenerationRequest, sample

    req = GenerationRequest.from_dict({**BASE, "loras": loras})
    host = DiffusersHost(world["pipe"], db=None)
    host.db = world["library"].db()
    try:
        host.apply(specs_from_request({"loras": loras}))
        out = np.asarray(sample(world["pipe"], req).convert("RGB"))
    finally:
        host.unload()
        host.db.close()
    return out


async def test_png_equals_solo_run_and_seed_shapes_alias(make_client, world):
    client, gen = await make_client()
    hero = world["ids"]["hero"]
    resp = await client.post("/lorawb/generate", json={**BASE, "loras": [{"lora": hero, "strength": 0.7}]})
    assert resp.status == 200 and resp.content_type == "image/png"
    assert hero in resp.headers["X-Lorawb-Applied"]
    png = _pixels(await resp.read())
    np.testing.assert_array_equal(png, _solo(world, [{"lora": hero, "strength": 0.7}]))
    for body in ({"brand_id": "hero", "lora_weights": 0.7},
                 {"lora_configs": [{"brand_id": hero, "weight": 0.7, "type": "lora"}]}):
        seed_shape = {**{k: v for k, v in BASE.items() if k != "steps"}, **body, "num_inference_steps": 2}
        resp = await client.post("/lorawb/generate", json=seed_shape)
        assert resp.status == 200, await resp.text()
        np.testing.assert_array_equal(_pixels(await resp.read()), png)
    assert (await (await client.get("/lorawb/cache")).json())["entries"] >= 0  # existing routes still served
    status = await (await client.get("/lorawb/generate")).json()
    assert status["done"] == 3 and status["family"] == "sd15"


async def test_json_with_variants(make_client, world):
    client, _ = await make_client()
    resp = await client.post("/lorawb/generate", json={**BASE, "format": "json", "variants": {"strength": [0, 1]},
                                                       "loras": [{"lora": world["ids"]["ink"], "weights": "OUTD"}]})
    assert resp.status == 200
    data = await resp.json()
    assert [i["label"] for i in data["images"]] == ["strength=0", "strength=1"]
    assert data["images"][1]["applied"]["loras"][0]["weights_source"].startswith("OUTD")
    zero = _pixels(base64.b64decode(data["images"][0]["png_base64"]))
    np.testing.assert_array_equal(zero, _solo(world, []))  # strength 0 = the base model's image


async def test_parallel_requests_never_mix(make_client, world):
    client, gen = await make_client(queue_size=4)
    stacks = [[{"lora": world["ids"]["hero"], "strength": 0.9}], [{"lora": world["ids"]["ink"], "strength": -0.8}],
              [], [{"lora": world["ids"]["hero"], "weights": "INS"}, {"lora": world["ids"]["ink"], "strength": 0.5}]]
    solos = [_solo(world, s) for s in stacks]
    resps = await asyncio.gather(*[client.post("/lorawb/generate", json={**BASE, "loras": s}) for s in stacks])
    for resp, solo in zip(resps, solos, strict=True):
        assert resp.status == 200
        np.testing.assert_array_equal(_pixels(await resp.read()), solo)
    assert gen.status()["done"] == 4 and not world["pipe"].get_list_adapters()


async def test_full_queue_429_and_disconnect_cancels(make_client, world):
    gate = threading.Event()
    client, gen = await make_client(queue_size=1, on_step=lambda: gate.wait(30))
    body = {**BASE, "loras": [{"lora": world["ids"]["hero"]}]}
    running = asyncio.ensure_future(client.post("/lorawb/generate", json=body))
    while not gen.status()["running"]:
        await asyncio.sleep(0.02)
    queued = asyncio.ensure_future(client.post("/lorawb/generate", json=body))
    while gen.status()["queued"] < 1:
        await asyncio.sleep(0.02)
    full = await client.post("/lorawb/generate", json=body)
    assert full.status == 429 and int(full.headers["Retry-After"]) >= 1
    assert (await full.json())["error"]["type"] == "QueueFull"
    queued.cancel()  # the client goes away while waiting
    while gen.status()["cancelled"] < 1:
        await asyncio.sleep(0.02)
    assert gen.status()["queued"] == 0
    gate.set()
    assert (await running).status == 200
    assert gen.status()["done"] == 1 and gen.status()["rejected"] == 1


async def test_bad_input_gets_clear_errors(make_client, world):
    from lorawb_core.server.http import Security

    client, gen = await make_client()

    async def err(payload, status, **kw):
        resp = await client.post("/lorawb/generate", **({"data": payload} if isinstance(payload, str) else
                                                          {"json": payload}), **kw)
        assert resp.status == status, await resp.text()
        return (await resp.json())["error"]

    assert (await err("{nope", 400))["field"] == "body"
    assert (await err({"loras": []}, 400))["field"] == "prompt"
    assert "SD1-CHR-077" in (await err({**BASE, "loras": [{"lora": "SD1-CHR-077"}]}, 404))["message"]
    assert (await err({**BASE, "loras": [{"lora": str(world["files"][0])}]}, 400))["field"] == "lora"
    msg = (await err({**BASE, "loras": [{"lora": world["ids"]["xl"]}]}, 400))["message"]
    assert "sdxl LoRA" in msg and "sd15" in msg
    assert (await err({**BASE, "steps": 10_000}, 400))["field"] == "steps"
    assert (await err({**BASE, "width": 4096, "height": 4096}, 400))["field"] == "width"
    assert (await err({**BASE, "loras": [{"lora": "x"}], "variants": "strength=" + ",".join(["1"] * 9)}, 400)
            )["field"] == "variants"
    fine = await client.post("/lorawb/generate", json={**BASE, "loras": [{"lora": "SD1-CHR-077"}], "fallback": True,
                                                       "format": "json"})
    assert fine.status == 200 and (await fine.json())["runs"][0]["applied"]["base_only"]
    remote, _ = await make_client(security=Security(remote=True, token="s3cret"))
    assert (await remote.post("/lorawb/generate", json=BASE)).status == 401
