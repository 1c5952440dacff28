"""Server-sent events for the standalone server: ``GET /lorawb/events`` streams every ``lorawb.*`` event.

Wire format (``text/event-stream``)::

    event: lorawb.scan_progress
    data: {"phase": "structure", "done": 120, "total": 400, "path": "/data/loras/x.safetensors"}

A client first receives ``lorawb.hello`` (what :class:`EventHub`'s ``hello`` callable returns, e.g. the scan status),
then events as they happen and a comment line every 15 s. ``emit`` may be called from any thread (the scan thread);
a client that falls more than ``queue_size`` events behind loses the oldest ones. Inside ComfyUI none of this runs:
events go through ``PromptServer.instance.send_sync`` and ComfyUI's websocket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .http import dumps

log = logging.getLogger("lorawb")
KEEPALIVE_S = 15.0
SSE_HEADERS = (("Content-Type", "text/event-stream"), ("Cache-Control", "no-store"), ("X-Accel-Buffering", "no"))


def frame(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {dumps(data)}\n\n".encode()


class EventHub:
    """Fan-out of events to every connected ``/lorawb/events`` client."""

    def __init__(self, hello: Callable[[], Any] | None = None, *, queue_size: int = 256) -> None:
        self.hello = hello
        self._queue_size = queue_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: set[asyncio.Queue] = set()
        self._closed = False

    @property
    def clients(self) -> int:
        return len(self._queues)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def emit(self, event: str, data: Any) -> None:
        """Queue ``event`` for every client; thread-safe; dropped before the server runs or after it stopped."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._closed:
            return
        try:
            loop.call_soon_threadsafe(self._publish, frame(event, data))
        except RuntimeError:  # the loop closed between the check and the call
            pass

    def _publish(self, payload: bytes | None) -> None:
        for q in list(self._queues):
            if q.full():
                try:
                    q.get_nowait()
                except asyncio.QueueEmpty:
                    pass
            q.put_nowait(payload)

    async def close(self, app: web.Application | None = None) -> None:
        """End every stream (server shutdown)."""
        self._closed = True
        self._publish(None)

    async def stream(self):
        """The byte frames of one client's stream (retry hint, hello, events, keep-alives) until the hub closes;
        any server's streaming response can send them (aiohttp's :meth:`handle`, Starlette's in :mod:`.asgi`)."""
        q: asyncio.Queue = asyncio.Queue(self._queue_size)
        self._queues.add(q)
        try:
            yield b"retry: 3000\n\n"
            if self.hello is not None:
                yield frame("lorawb.hello", self.hello())
            while not self._closed:
                try:
                    payload = await asyncio.wait_for(q.get(), timeout=KEEPALIVE_S)
                except asyncio.TimeoutError:
                    payload = b": keep-alive\n\n"
                if payload is None:
                    break
                yield payload
        finally:
            self._queues.discard(q)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers=dict(SSE_HEADERS))
        await resp.prepare(request)
        frames = self.stream()
        try:
            async for payload in frames:
                await resp.write(payload)
        except (ConnectionResetError, ConnectionError):
            pass  # the client went away
        finally:
            await frames.aclose()
        return resp
