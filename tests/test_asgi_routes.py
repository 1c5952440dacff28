"""The route table on FastAPI (what A1111/Forge serve) answers exactly as on aiohttp: same statuses, bodies, error
shapes, token rule and body limit — one adapter (lorawb_core.server.asgi), no second copy of the handlers."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from ui_helpers import route_library

from lorawb_core.server.asgi import mount_routes
from lorawb_core.server.events import EventHub
from lorawb_core.server.http import TOKEN_HEADER, Security
from lorawb_core.server.routes import ROUTES
from lorawb_core.service import LibraryService

SCAN_OPTIONS = {"workers": 0, "settle_window": 0.0}


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return route_library(tmp_path_factory.mktemp("asgi"))


@pytest.fixture(scope="module")
def service(library):
    svc = LibraryService(library["db"], [str(library["lib"])], scan_options=SCAN_OPTIONS)
    yield svc
    svc.close()


def fastapi_client(service, security=None, hub=None) -> TestClient:
    app = FastAPI()

    @app.get("/sdapi/v1/own")  # the host's own route stays the host's
    def own():
        return {"own": True}

    mount_routes(app, service, security=security or Security(), hub=hub)
    return TestClient(app, base_url="http://127.0.0.1:7860")


def requests_for(library) -> list[tuple[str, str, object]]:
    sid = library["ids"]["sdxl_outfits_0.safetensors"]
    pending = library["ids"]["pending_flux.safetensors"]
    return [
        ("GET", "/lorawb/loras?limit=5", None), ("GET", "/lorawb/loras?family=flux&spark=0", None),
        ("GET", "/lorawb/loras?limit=abc", None), ("GET", "/lorawb/facets", None), ("GET", "/lorawb/duplicates", None),
        ("GET", f"/lorawb/loras/{sid}", None), ("GET", f"/lorawb/loras/{sid}/blocks", None),
        ("GET", f"/lorawb/loras/{sid}/blocks.csv", None), ("GET", f"/lorawb/loras/{pending}/blocks", None),
        ("GET", f"/lorawb/loras/{sid}/metadata", None), ("GET", "/lorawb/loras/ZZZ-NOP-999", None),
        ("GET", "/lorawb/loras/not%20an%20id", None), ("GET", "/lorawb/layouts", None),
        ("GET", "/lorawb/layouts/sd15_unet_17", None), ("GET", "/lorawb/layouts/nope", None),
        ("GET", "/lorawb/profiles", None), ("GET", "/lorawb/profiles/999999", None),
        ("POST", "/lorawb/compose/check", {"stack": [{"lora": sid}], "directions": False}),
        ("POST", "/lorawb/compose/check", "not json"), ("POST", "/lorawb/profiles", {"name": "x"}),
        ("POST", "/lorawb/profiles/export", {"dialect": "lbw"}),
    ]


@pytest.mark.asyncio
async def test_every_request_answers_as_on_aiohttp(client, service, library):
    """Status, content type and body of the FastAPI answer equal the aiohttp app's for reads, errors and posts."""
    fast = fastapi_client(service)
    for method, path, body in requests_for(library):
        data = body if isinstance(body, str) else (json.dumps(body) if body is not None else None)
        a = await client.request(method, path, data=data)
        a_body = await a.read()
        f = fast.request(method, path, content=data)
        assert f.status_code == a.status, (method, path, f.text[:300], a_body[:300])
        assert f.headers["content-type"].split(";")[0] == a.content_type, (method, path)
        if a.content_type == "application/json":
            assert f.json() == json.loads(a_body), (method, path)
        else:
            assert f.content == a_body, (method, path)
        for header in ("Cache-Control", "Content-Disposition"):
            assert f.headers.get(header) == a.headers.get(header), (method, path, header)


def test_every_table_route_is_mounted(service):
    fast = fastapi_client(service)
    paths = {(m, r.path) for r in fast.app.router.routes for m in (getattr(r, "methods", None) or ())}
    assert all((r.method, r.path) in paths for r in ROUTES)
    assert fast.get("/sdapi/v1/own").json() == {"own": True}


def test_unknown_paths_and_wrong_methods_get_the_json_error_shape(service):
    fast = fastapi_client(service)
    resp = fast.get("/lorawb/nothing/here")
    assert resp.status_code == 404 and resp.json()["error"]["type"] == "NotFound"
    resp = fast.put("/lorawb/info")
    assert resp.status_code == 405 and resp.json()["error"]["type"] == "MethodNotAllowed"
    assert resp.headers["Allow"] == "GET, HEAD"  # Starlette answers HEAD for every GET route


def test_token_rule_on_a_remote_server(service):
    fast = fastapi_client(service, Security(token="s3cret-token", remote=True))
    resp = fast.post("/lorawb/scan/cancel")
    assert resp.status_code == 401 and resp.json()["error"]["field"] == TOKEN_HEADER
    resp = fast.post("/lorawb/scan/cancel", headers={TOKEN_HEADER: "wrong"})
    assert resp.status_code == 403 and resp.json()["error"]["type"] == "Forbidden"
    assert fast.post("/lorawb/scan/cancel", headers={TOKEN_HEADER: "s3cret-token"}).status_code == 200
    assert fast.get("/lorawb/loras").status_code == 200  # reading needs no token
    assert fast.get("/lorawb/info").json()["token_required"] is True
    no_token = fastapi_client(service, Security(token=None, remote=True)).post("/lorawb/scan/cancel")
    assert no_token.status_code == 403 and "LORAWB_TOKEN" in no_token.json()["error"]["message"]


def test_cross_origin_and_oversized_bodies_are_refused(service):
    fast = fastapi_client(service, Security(max_body=1000))
    resp = fast.post("/lorawb/scan/cancel", headers={"Origin": "http://evil.example"})
    assert resp.status_code == 403 and "Cross-origin" in resp.json()["error"]["message"]
    resp = fast.post("/lorawb/compose/check", content=b"{" + b" " * 5000 + b"}")
    assert resp.status_code == 413 and resp.json()["error"]["field"] == "body"


def test_ui_page_static_files_and_events(service):
    hub = EventHub(hello=lambda: {"scan": service.scan_status()})
    fast = fastapi_client(service, hub=hub)
    page = fast.get("/lorawb/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'self'" in csp and "'nonce-" in csp and "{{nonce}}" not in page.text
    js = fast.get("/lorawb/static/api.js")
    assert js.status_code == 200 and "EVENTS_PATH" in js.text
    assert fast.get("/lorawb/static/../../pyproject.toml").status_code == 404
    with fast.stream("GET", "/lorawb/events") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        lines = events.iter_lines()
        assert next(lines) == "retry: 3000"
        assert next(lines) == ""
        assert next(lines) == "event: lorawb.hello"
        assert json.loads(next(lines).removeprefix("data: "))["scan"]["state"] == "idle"
