"""The standalone application of ``lorawb serve``: the same routes as inside ComfyUI, plus

* ``GET /lorawb/ui`` — the panel page (the modules of ``web/panel/`` without ComfyUI);
* ``GET /lorawb/static/…`` — the ``web/`` folder (aiohttp's static handler: no path outside it is served);
* ``GET /lorawb/events`` — server-sent events (:mod:`.events`);
* ``GET /`` — a redirect to the page.

Unknown ``/lorawb/…`` paths and wrong methods get the same JSON error shape as the routes.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

from aiohttp import web

from ..service import LibraryService
from .events import EventHub
from .http import Security, error_body, json_response
from .routes import register_routes

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
HUB = web.AppKey("lorawb_hub", EventHub)
SERVICE = web.AppKey("lorawb_service", LibraryService)
_CSP = ("default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'; "
        "form-action 'none'")


@web.middleware
async def _json_errors(request: web.Request, handler):
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        path = request.path
        if exc.status < 400 or not path.startswith("/lorawb/") or path.startswith("/lorawb/static/"):
            raise
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status, "HTTPError")
        message = f"No lorawb route {request.method} {path}." if exc.status in (404, 405) else exc.reason
        resp = json_response(error_body(kind, message), exc.status)
        if exc.status == 405 and "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    if not resp.prepared:
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    return resp


def _ui_page(web_dir: Path):
    async def ui(request: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        html = (web_dir / "ui.html").read_text(encoding="utf-8").replace("{{nonce}}", nonce)
        return web.Response(text=html, content_type="text/html", headers={
            "Cache-Control": "no-store", "Content-Security-Policy": _CSP.format(nonce=nonce),
            "Referrer-Policy": "no-referrer"})

    return ui


def _redirect(location: str):
    async def go(request: web.Request) -> web.Response:
        raise web.HTTPFound(location)

    return go


def create_app(service: LibraryService, *, hub: EventHub | None = None, security: Security | None = None,
               web_dir: str | Path = WEB_DIR, scan_on_start: bool = False) -> web.Application:
    """The standalone app. Build ``service`` with ``emit=hub.emit`` so scan events reach ``/lorawb/events``."""
    security = security or Security.for_hosts(["127.0.0.1"])
    hub = hub or EventHub()
    if hub.hello is None:
        hub.hello = lambda: {"scan": service.scan_status()}
    web_dir = Path(web_dir)
    app = web.Application(client_max_size=security.max_body + 64 * 1024, middlewares=[_json_errors])
    app[HUB] = hub
    app[SERVICE] = service
    register_routes(app, service, security=security)
    app.router.add_get("/lorawb/events", hub.handle)
    app.router.add_get("/lorawb/ui", _ui_page(web_dir))
    app.router.add_get("/lorawb/ui/", _redirect("../ui"))
    app.router.add_get("/", _redirect("/lorawb/ui"))
    app.router.add_static("/lorawb/static/", web_dir, follow_symlinks=False)

    async def on_startup(app: web.Application) -> None:
        hub.bind(asyncio.get_running_loop())
        if scan_on_start:
            service.start_scan()

    async def on_cleanup(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, service.close)

    app.on_startup.append(on_startup)
    app.on_shutdown.append(hub.close)
    app.on_cleanup.append(on_cleanup)
    return app
