"""The token rule, body limits, traversal attempts (with every file the server opens audited), the standalone app
(page, static files, JSON 404s, server-sent events) and ``lorawb serve``'s refusal to listen beyond localhost."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from ui_helpers import route_library

from lorawb_core.cli import main
from lorawb_core.server.app import WEB_DIR, create_app
from lorawb_core.server.events import EventHub
from lorawb_core.server.http import MAX_BODY, TOKEN_HEADER, Security, is_loopback_host
from lorawb_core.server.routes import ROUTES, register_routes
from lorawb_core.service import LibraryService

SCAN_OPTIONS = {"workers": 0, "settle_window": 0.0}


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    base = tmp_path_factory.mktemp("security")
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_text("TOP SECRET")
    return {**route_library(base), "base": base}


@pytest.fixture(scope="module")
def service(library):
    svc = LibraryService(library["db"], [str(library["lib"])], scan_options=SCAN_OPTIONS)
    yield svc
    svc.close()


async def make_client(aiohttp_client, service, security):
    app = web.Application()
    register_routes(app, service, security=security)
    return await aiohttp_client(app)


def mutating_routes(ids):
    sid = ids["sdxl_outfits_0.safetensors"]
    return [(r.method, r.path.replace("{stable_id}", sid).replace("{profile_id}", "999999")
             .replace("{job_id}", "999999").replace("{batch_id}", "999999")) for r in ROUTES
            if r.mutating and r.path != "/lorawb/scan"]


ALLOWED_WITHOUT_BODY = (200, 202, 400, 404, 503)  # the token rule passed; the route then judged the (empty) body


# ---- the token rule --------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_local_server_needs_no_token(aiohttp_client, service, library):
    client = await make_client(aiohttp_client, service, Security())
    for method, path in mutating_routes(library["ids"]):
        resp = await client.request(method, path)
        assert resp.status in ALLOWED_WITHOUT_BODY, (method, path, await resp.text())


@pytest.mark.asyncio
async def test_remote_server_requires_the_token_on_mutating_routes(aiohttp_client, service, library):
    client = await make_client(aiohttp_client, service, Security(token="s3cret-token", remote=True))
    for method, path in mutating_routes(library["ids"]):
        resp = await client.request(method, path)
        body = await resp.json()
        assert resp.status == 401 and body["error"]["type"] == "Unauthorized", (method, path, body)
        assert body["error"]["field"] == TOKEN_HEADER
        resp = await client.request(method, path, headers={TOKEN_HEADER: "wrong"})
        assert resp.status == 403 and (await resp.json())["error"]["type"] == "Forbidden"
        resp = await client.request(method, path, headers={TOKEN_HEADER: "s3cret-token"})
        assert resp.status in ALLOWED_WITHOUT_BODY, (method, path, await resp.text())
    assert (await client.get("/lorawb/loras")).status == 200  # reading needs no token
    assert (await client.get("/lorawb/info")).status == 200


@pytest.mark.asyncio
async def test_remote_server_without_a_configured_token_refuses_changes(aiohttp_client, service):
    client = await make_client(aiohttp_client, service, Security(token=None, remote=True))
    resp = await client.post("/lorawb/scan/cancel", headers={TOKEN_HEADER: "anything"})
    body = await resp.json()
    assert resp.status == 403 and "LORAWB_TOKEN" in body["error"]["message"]


@pytest.mark.asyncio
async def test_cross_origin_changes_are_refused(aiohttp_client, service):
    client = await make_client(aiohttp_client, service, Security())
    resp = await client.post("/lorawb/scan/cancel", headers={"Origin": "http://evil.example"})
    assert resp.status == 403 and "Cross-origin" in (await resp.json())["error"]["message"]
    same = f"http://{client.host}:{client.port}"
    assert (await client.post("/lorawb/scan/cancel", headers={"Origin": same})).status == 200


def test_security_for_hosts(monkeypatch):
    monkeypatch.setenv("LORAWB_TOKEN", "abc")
    assert Security.for_hosts(["127.0.0.1"]).remote is False
    assert Security.for_hosts(["localhost", "::1"]).remote is False
    remote = Security.for_hosts(["0.0.0.0"])
    assert remote.remote is True and remote.token == "abc"
    assert Security.for_hosts(["127.0.0.1", "192.168.1.20"]).remote is True
    assert is_loopback_host("::ffff:127.0.0.1") and not is_loopback_host("") and not is_loopback_host("10.0.0.1")


# ---- bodies ------------------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_oversized_bodies_are_413(aiohttp_client, service, library):
    client = await make_client(aiohttp_client, service, Security(max_body=1024))
    sid = library["ids"]["sdxl_outfits_0.safetensors"]
    big = json.dumps({"structure_only": False, "pad": "x" * 5000}).encode()
    resp = await client.post(f"/lorawb/loras/{sid}/reindex", data=big, headers={"Content-Type": "application/json"})
    body = await resp.json()
    assert resp.status == 413 and body["error"]["type"] == "PayloadTooLarge" and body["error"]["field"] == "body"

    async def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(10):
            yield b" " * 512

    resp = await client.post(f"/lorawb/loras/{sid}/reindex", data=chunks())
    assert resp.status == 413
    assert MAX_BODY == 2 * 1024 * 1024 and Security().max_body == MAX_BODY


@pytest.mark.parametrize(("data", "message"), [(b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"),
                                               (b"\xff\xfe", "not valid JSON")])
@pytest.mark.asyncio
async def test_malformed_bodies_are_400(aiohttp_client, service, data, message):
    client = await make_client(aiohttp_client, service, Security())
    resp = await client.post("/lorawb/scan", data=data, headers={"Content-Type": "application/json"})
    body = await resp.json()
    assert resp.status == 400 and body["error"]["field"] == "body" and message in body["error"]["message"]


# ---- traversal -----------------------------------------------------------------------------------------------------
TRAVERSALS = [
    "/lorawb/loras/..%2F..%2Foutside%2Fsecret.txt", "/lorawb/loras/../../outside/secret.txt",
    "/lorawb/loras/%2e%2e%2f%2e%2e%2foutside/blocks", "/lorawb/loras/SDX-CHR-001%00/metadata",
    "/lorawb/layouts/..%2F..%2Fetc%2Fpasswd", "/lorawb/static/../../outside/secret.txt",
    "/lorawb/static/%2e%2e/%2e%2e/pyproject.toml", "/lorawb/static/..%2F..%2Fpyproject.toml",
    "/lorawb/static//etc/passwd", "/lorawb/ui/../../outside/secret.txt",
]


@pytest_asyncio.fixture
async def standalone(aiohttp_client, service):
    hub = EventHub()
    app = create_app(service, hub=hub, security=Security())
    app.on_cleanup.clear()  # the module's service outlives each test's app
    client = await aiohttp_client(app)
    return client, hub


class OpenAudit:
    """Every file path any thread opens while active (``sys.addaudithook``; hooks cannot be removed)."""

    opened: list[str] = []
    active = False
    installed = False

    @classmethod
    def hook(cls, event, args):
        if cls.active and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            cls.opened.append(os.fsdecode(args[0]))

    def __enter__(self):
        if not OpenAudit.installed:
            sys.addaudithook(OpenAudit.hook)
            OpenAudit.installed = True
        OpenAudit.opened.clear()
        OpenAudit.active = True
        return OpenAudit.opened

    def __exit__(self, *exc):
        OpenAudit.active = False


@pytest.mark.asyncio
async def test_no_route_reads_outside_the_roots_and_the_database_dir(standalone, library):
    client, _ = standalone
    base = library["base"]
    allowed = [Path(library["lib"]), Path(library["db"]).parent]
    sid = library["ids"]["flux_styles_1.safetensors"]
    with OpenAudit() as opened:
        for path in TRAVERSALS:
            resp = await client.get(path)
            text = await resp.text()
            assert resp.status in (400, 403, 404), (path, resp.status, text[:200])
            assert "TOP SECRET" not in text and "[build-system]" not in text and "root:" not in text
        for r in ROUTES:  # every route, once, with real arguments
            path = (r.path.replace("{stable_id}", sid).replace("{layout_id}", "flux_dit_61").replace("{profile_id}", "1")
                    .replace("{job_id}", "1").replace("{batch_id}", "1"))
            resp = await client.request(r.method, path)
            assert resp.status < 500 or resp.status == 503, (r, await resp.text())
        await asyncio.sleep(0.2)
    inside_base = [Path(p).resolve() for p in opened if Path(p).resolve().is_relative_to(base.resolve())]
    assert inside_base, "the audit saw nothing: the test is not exercising the routes"
    strays = [p for p in inside_base if not any(p.is_relative_to(a.resolve()) for a in allowed)]
    assert not strays, strays
    web_files = [Path(p).resolve() for p in opened if Path(p).resolve().is_relative_to(WEB_DIR)]
    assert web_files == [] or all(p.is_relative_to(WEB_DIR) for p in web_files)


# ---- the standalone app --------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_standalone_page_static_and_json_404s(standalone):
    client, _ = standalone
    page = await client.get("/lorawb/ui")
    html = await page.text()
    assert page.status == 200 and page.content_type == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self' 'nonce-" in csp and "object-src 'none'" in csp and "{{nonce}}" not in html
    resp = await client.get("/lorawb/ui/", allow_redirects=False)
    assert resp.status == 302
    root = await client.get("/", allow_redirects=False)
    assert root.status == 302 and root.headers["Location"] == "/lorawb/ui"
    api = await client.get("/lorawb/static/api.js")
    assert api.status == 200 and "javascript" in api.content_type and "/lorawb/loras" in await api.text()
    missing = await client.get("/lorawb/no-such-route")
    assert missing.status == 404 and (await missing.json())["error"]["type"] == "NotFound"
    wrong = await client.put("/lorawb/layouts")
    assert wrong.status == 405 and (await wrong.json())["error"]["type"] == "MethodNotAllowed"
    assert (await client.get("/lorawb/loras")).headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.asyncio
async def test_server_sent_events(standalone):
    client, hub = standalone
    resp = await client.get("/lorawb/events")
    assert resp.status == 200 and resp.content_type == "text/event-stream"

    async def next_event():
        event = data = None
        while True:
            line = (await asyncio.wait_for(resp.content.readline(), 5)).decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and event:
                return event, data

    event, data = await next_event()
    assert event == "lorawb.hello" and data["scan"]["state"] in ("idle", "done")
    for _ in range(50):  # the stream is registered once its first frame is written
        if hub.clients:
            break
        await asyncio.sleep(0.02)
    t = threading.Thread(target=hub.emit, args=("lorawb.scan_progress", {"phase": "walk", "done": 1, "total": 2,
                                                                         "path": "<b>x</b>"}))
    t.start()
    t.join()
    assert await next_event() == ("lorawb.scan_progress", {"phase": "walk", "done": 1, "total": 2,
                                                           "path": "<b>x</b>"})
    await hub.close()
    assert await asyncio.wait_for(resp.content.read(), 5) == b""  # the stream ends at shutdown
    resp.close()


# ---- lorawb serve ----------------------------------------------------------------------------------------------------
def test_serve_refuses_a_public_host_without_a_token(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("LORAWB_TOKEN", raising=False)
    rc = main(["serve", "--host", "0.0.0.0", "--db", str(tmp_path / "db.sqlite3")])
    err = capsys.readouterr().err
    assert rc == 2 and "LORAWB_TOKEN" in err and "refusing to listen on 0.0.0.0" in err
    assert not (tmp_path / "db.sqlite3").exists()
