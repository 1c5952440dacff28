"""The HTTP boundary in one place: the error → JSON mapping, the token rule, body and query parsing.

Every route handler is wrapped by :func:`endpoint` (ComfyUI's app takes no middlewares from a pack), so every error
leaves the server as ``{"error": {"type", "message", "field"?}}`` with a real status:

======================================================  ======
error                                                    status
======================================================  ======
bad query/body value (:class:`BadRequest`, ``field``)    400
:class:`~lorawb_core.errors.UsageError`, other           400
``LorawbError``
token missing / wrong (mutating routes, remote server)   401 / 403
:class:`~lorawb_core.errors.NotInLibrary`,               404
:class:`~lorawb_core.errors.UnknownLayout`,
:class:`~lorawb_core.errors.ProfileNotFound`,
:class:`~lorawb_core.errors.JobNotFound`
state conflict (blocks not measured yet)                 409
body over the limit (Content-Length or while reading)    413
:class:`~lorawb_core.errors.LibraryError`                503
:class:`~lorawb_core.errors.ServerUnreachable` (ComfyUI)  502
anything else (logged with its traceback)                500
======================================================  ======
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import json
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..errors import (
    JobNotFound,
    LibraryError,
    LorawbError,
    NotInLibrary,
    ProfileNotFound,
    ServerUnreachable,
    UnknownLayout,
    UsageError,
)
from ..strict_json import finite_json

log = logging.getLogger("lorawb")

# where the endpoint wrapper leaves the security settings for a handler (a typed key where aiohttp has them)
SECURITY_KEY = web.RequestKey("lorawb_security", object) if hasattr(web, "RequestKey") else "lorawb_security"

MAX_BODY = 2 * 1024 * 1024
TOKEN_HEADER = "X-Lorawb-Token"
TOKEN_ENV = "LORAWB_TOKEN"
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
Handler = Callable[[web.Request], Awaitable[Any]]


class HttpError(LorawbError):
    """An error about the request itself; ``status`` and optionally the offending ``field``."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        if status is not None:
            self.status = status


class BadRequest(HttpError):
    """A query or body value is missing, malformed or out of range (``field`` names it)."""


class Unauthorized(HttpError):
    """A mutating request to a server that listens beyond localhost came without the token."""

    status = 401


class Forbidden(HttpError):
    """The token is wrong, no token is configured on a remote server, or the request is cross-origin."""

    status = 403


class Conflict(HttpError):
    """The request cannot be served in the current state (e.g. blocks not measured yet)."""

    status = 409


class PayloadTooLarge(HttpError):
    status = 413


ERROR_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (NotInLibrary, 404), (UnknownLayout, 404), (ProfileNotFound, 404), (JobNotFound, 404), (LibraryError, 503),
    (ServerUnreachable, 502), (UsageError, 400),
    (LorawbError, 400))


def status_for(exc: BaseException) -> int:
    if isinstance(exc, HttpError):
        return exc.status
    for cls, status in ERROR_STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(type_: str, message: str, field: str | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"type": type_, "message": message}
    if field:
        err["field"] = field
    return {"error": err}


def dumps(data: Any) -> str:
    """Strict JSON (browsers reject NaN): non-finite floats become null, other objects their ``str``."""
    return finite_json(data, default=str)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(data), status=status, content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def error_response(exc: BaseException) -> web.Response:
    status = status_for(exc)
    if status == 500:
        log.error("lorawb: unexpected error in a route", exc_info=exc)
        return json_response(error_body("InternalError", "Internal error in lorawb; the server log has the details."),
                             500)
    return json_response(error_body(type(exc).__name__, str(exc), getattr(exc, "field", None)), status)


# ---- the token rule -------------------------------------------------------------------------------------------
def is_loopback_host(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1, ``localhost`` and names that resolve only to loopback addresses."""
    if not host:
        return False
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(is_loopback_host(info[4][0]) for info in infos)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def comfy_listen_hosts() -> list[str] | None:
    """The hosts ComfyUI was told to listen on (``--listen``), when running inside ComfyUI (never imports it)."""
    cli_args = sys.modules.get("comfy.cli_args")
    listen = getattr(getattr(cli_args, "args", None), "listen", None)
    if not listen:
        return None
    return [h.strip() for h in str(listen).split(",") if h.strip()]


@dataclass
class Security:
    """Who may change things. ``remote``: the server listens beyond loopback, so POST/PUT/PATCH/DELETE need
    ``token`` in the ``X-Lorawb-Token`` header. A request that arrives on a non-loopback local address is treated
    as remote whatever ``remote`` says. ``max_body``: the largest request body, in bytes."""

    token: str | None = None
    remote: bool = False
    max_body: int = MAX_BODY

    @classmethod
    def for_hosts(cls, hosts: Sequence[str] | None, *, token: str | None = None,
                  max_body: int = MAX_BODY) -> Security:
        """The rule for a server listening on ``hosts`` (None: ComfyUI's ``--listen`` if inside ComfyUI, else
        loopback); the token comes from ``LORAWB_TOKEN`` unless given."""
        if hosts is None:
            hosts = comfy_listen_hosts() or ["127.0.0.1"]
        remote = not all(is_loopback_host(h) for h in hosts)
        return cls(token=token if token is not None else (os.environ.get(TOKEN_ENV) or None), remote=remote,
                   max_body=max_body)

    def request_is_remote(self, request: web.Request) -> bool:
        if self.remote:
            return True
        sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
        if isinstance(sockname, (tuple, list)) and sockname:
            return not is_loopback_host(str(sockname[0]))
        return False  # unix socket, or no transport (tests): local

    def check(self, request: web.Request) -> None:
        """Refuse a mutating request that is cross-origin, or remote without the right token."""
        origin = request.headers.get("Origin")
        if origin and origin != "null":
            from yarl import URL

            try:
                o = URL(origin)
                h = URL(f"{o.scheme}://{request.headers.get('Host', '')}")
                same = o.host is not None and (o.host, o.port) == (h.host, h.port)
            except ValueError:
                same = False
            if not same:
                raise Forbidden(f"Cross-origin request from {origin} refused; use the lorawb page served by this "
                                "server.")
        if not self.request_is_remote(request):
            return
        if not self.token:
            raise Forbidden(f"This server listens beyond localhost: set {TOKEN_ENV} on the server to allow changes, "
                            f"and send it in the {TOKEN_HEADER} header.")
        given = request.headers.get(TOKEN_HEADER)
        if not given:
            raise Unauthorized(f"This server listens beyond localhost: send the token ({TOKEN_ENV}) in the "
                               f"{TOKEN_HEADER} header.", field=TOKEN_HEADER)
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise Forbidden("Wrong token.", field=TOKEN_HEADER)


def endpoint(fn: Handler, *, security: Security, mutating: bool) -> Handler:
    """Wrap a handler: token rule for mutating routes, result → JSON, every error → the JSON error shape."""

    @functools.wraps(fn)
    async def handler(request: web.Request) -> web.StreamResponse:
        request[SECURITY_KEY] = security
        try:
            if mutating:
                security.check(request)
            result = await fn(request)
        except web.HTTPException:
            raise
        except Exception as exc:
            return error_response(exc)
        if isinstance(result, web.StreamResponse):
            return result
        return json_response(result)

    return handler


# ---- request parsing ------------------------------------------------------------------------------------------
async def read_json(request: web.Request, *, required: bool = False) -> dict[str, Any]:
    """The body as a JSON object (``{}`` when empty and not ``required``), at most the security's ``max_body``."""
    security: Security = request.get(SECURITY_KEY) or Security()
    limit = security.max_body
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"The request body is {request.content_length} bytes; the limit is {limit}.",
                              field="body")
    chunks, size = [], 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes.", field="body")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        if required:
            raise BadRequest("A JSON object is required in the request body.", field="body")
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"The request body is not valid JSON ({exc}).", field="body") from None
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.", field="body")
    return data


def q_str(request: web.Request, name: str, default: str | None = None, *, max_len: int = 200) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    if len(value) > max_len:
        raise BadRequest(f"'{name}' is longer than {max_len} characters.", field=name)
    return value


def q_int(request: web.Request, name: str, default: int, *, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be an integer, not {raw[:40]!r}.", field=name) from None
    if not lo <= value <= hi:
        raise BadRequest(f"'{name}' must be between {lo} and {hi}, not {value}.", field=name)
    return value


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def q_bool(request: web.Request, name: str, default: bool = False) -> bool:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise BadRequest(f"'{name}' must be true or false, not {raw[:40]!r}.", field=name)


def q_choice(request: web.Request, name: str, choices: Sequence[str], default: str | None = None) -> str | None:
    value = request.query.get(name) or default
    if value is not None and value not in choices:
        raise BadRequest(f"'{name}' must be one of {', '.join(choices)}, not {value[:40]!r}.", field=name)
    return value


def body_bool(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be true or false.", field=name)
    return value


def body_str(body: dict[str, Any], name: str, *, required: bool = False, max_len: int = 200,
             default: str | None = None) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(f"'{name}' is required.", field=name)
        return default
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string.", field=name)
    if len(value) > max_len:
        raise BadRequest(f"'{name}' is longer than {max_len} characters.", field=name)
    return value
