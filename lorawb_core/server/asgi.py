"""The route table on a Starlette/FastAPI app (A1111 and Forge serve one): the SAME handlers as on aiohttp.

Each route of :data:`.routes.ROUTES` is added to the app with a small adapter: the Starlette request is shown to the
handler as the few parts of an aiohttp request it reads (:class:`RequestView`: ``match_info``, ``query``,
``headers``, ``content``, ``content_length``, ``transport``), the handler runs inside :func:`.http.endpoint` (so the
token rule, the body limit and the error → JSON mapping are the aiohttp ones), and its aiohttp response is copied
into a Starlette response. Besides the table: ``GET /lorawb/ui`` (the panel page, framable by the same origin only,
so the A1111 tab can show it), ``/lorawb/static/…`` (the ``web/`` folder), ``GET /lorawb/events`` (server-sent
events) and a JSON 404/405 for any other ``/lorawb/…`` path.

>>> from fastapi import FastAPI                                                                 # doctest: +SKIP
>>> app = FastAPI(); mount_routes(app, LibraryService(db, roots))                             # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import StaticFiles

from ..service import LibraryService
from .app import WEB_DIR
from .events import SSE_HEADERS, EventHub
from .http import Security, endpoint, error_body, json_response
from .routes import ROUTES, Handlers

_CSP = ("default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'self'; "
        "form-action 'none'")


class _Body:
    """``request.content`` for the handlers: the body read once by the adapter, handed out in chunks."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    async def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        chunk, self._pos = self._data[self._pos:end], min(end, len(self._data))
        return chunk


class _Transport:
    """``request.transport``: only the local address (``sockname``), which the token rule reads."""

    def __init__(self, server: tuple[str, int] | None) -> None:
        self._server = server

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._server if name == "sockname" and self._server else default


class RequestView:
    """What the handlers read of an aiohttp request, taken from a Starlette request (body already read)."""

    def __init__(self, request: Request, body: bytes) -> None:
        self.method = request.method
        self.path = request.url.path
        self.match_info: Mapping[str, str] = dict(request.path_params)
        self.query = request.query_params
        self.headers = request.headers
        self.content = _Body(body)
        length = request.headers.get("content-length")
        self.content_length = int(length) if length and length.isdigit() else None
        server = request.scope.get("server")
        self.transport = _Transport(tuple(server) if server else None)
        self._values: dict[Any, Any] = {}

    def __getitem__(self, key: Any) -> Any:
        return self._values[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._values[key] = value

    def get(self, key: Any, default: Any = None) -> Any:
        return self._values.get(key, default)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, cut at ``limit + 1`` bytes: enough for the handler's own limit check to refuse it (413)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)[:limit + 1]


def _to_starlette(resp: Any) -> Response:
    """An aiohttp ``web.Response`` (what :func:`.http.endpoint` returns) as a Starlette response."""
    headers = {k: v for k, v in resp.headers.items() if k.lower() not in ("content-length", "content-type")}
    content_type = resp.headers.get("Content-Type") or resp.content_type
    return Response(content=resp.body or b"", status_code=resp.status, headers=headers, media_type=content_type)


def _adapt(fn, security: Security, mutating: bool):
    wrapped = endpoint(fn, security=security, mutating=mutating)

    async def route(request: Request) -> Response:
        body = await _read_body(request, security.max_body) if mutating or request.method != "GET" else b""
        return _to_starlette(await wrapped(RequestView(request, body)))

    route.__name__ = f"lorawb_{fn.__name__}"
    return route


def _ui_page(web_dir: Path):
    async def ui(request: Request) -> Response:
        nonce = secrets.token_urlsafe(16)
        html = (web_dir / "ui.html").read_text(encoding="utf-8").replace("{{nonce}}", nonce)
        return Response(html, media_type="text/html", headers={
            "Cache-Control": "no-store", "Content-Security-Policy": _CSP.format(nonce=nonce),
            "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"})

    return ui


def _events(hub: EventHub):
    async def events(request: Request) -> StreamingResponse:
        hub.bind(asyncio.get_running_loop())
        return StreamingResponse(hub.stream(), headers=dict(SSE_HEADERS[1:]), media_type="text/event-stream")

    return events


def _fallback(routes: list[Route]):
    async def not_found(request: Request) -> Response:
        allowed = sorted({m for r in routes if r.matches(request.scope)[0] == Match.PARTIAL for m in r.methods or ()})
        status = 405 if allowed else 404
        resp = json_response(error_body("MethodNotAllowed" if allowed else "NotFound",
                                        f"No lorawb route {request.method} {request.url.path}."), status)
        out = _to_starlette(resp)
        if allowed:
            out.headers["Allow"] = ", ".join(allowed)
        return out

    return not_found


def lorawb_routes(service: LibraryService, *, security: Security | None = None, hub: EventHub | None = None,
                  web_dir: str | Path = WEB_DIR) -> list[Route | Mount]:
    """Starlette routes for the whole table plus the page, static files, events and the JSON fallback (last)."""
    security = security or Security.for_hosts(["127.0.0.1"])
    handlers = Handlers(service)
    routes: list[Route] = [Route(r.path, _adapt(getattr(handlers, r.handler_name), security, r.mutating),
                                 methods=[r.method]) for r in ROUTES]
    web_dir = Path(web_dir)
    routes.append(Route("/lorawb/ui", _ui_page(web_dir), methods=["GET"]))
    if hub is not None:
        routes.append(Route("/lorawb/events", _events(hub), methods=["GET"]))
    mounts: list[Route | Mount] = [*routes, Mount("/lorawb/static", StaticFiles(directory=web_dir))]
    any_method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    return [*mounts, Route("/lorawb/{rest:path}", _fallback(routes), methods=any_method)]


def mount_routes(app: Any, service: LibraryService, *, security: Security | None = None, hub: EventHub | None = None,
                 web_dir: str | Path = WEB_DIR) -> list[Route | Mount]:
    """Add :func:`lorawb_routes` to a Starlette/FastAPI ``app`` (after its own routes); returns what was added."""
    added = lorawb_routes(service, security=security, hub=hub, web_dir=web_dir)
    app.router.routes.extend(added)
    return added

