"""A ComfyUI server seen through its HTTP API (aiohttp): what the batch queue needs and nothing else.

>>> async with aiohttp.ClientSession() as session:                                          # doctest: +SKIP
...     comfy = ComfyClient(session, "http://127.0.0.1:8188")
...     sent = await comfy.submit(workflow, prompt_id=str(uuid.uuid4()), marker="lorawb-job-17")
...     entry = await comfy.history(sent)                     # None until the prompt has finished

Endpoints used: ``POST /prompt`` (with our ``prompt_id`` — current ComfyUI keeps it, older ones choose their own,
so the job's id also travels in ``extra_data`` as :data:`MARKER_KEY` and :meth:`ComfyClient.locate` finds a prompt by
either), ``GET /prompt`` (``exec_info.queue_remaining``), ``GET /queue``, ``GET /history/{id}``, ``GET /history``,
``GET /view`` (images, saved atomically), ``GET /object_info``, ``POST /interrupt``, ``POST /queue {"delete"}`` and
the ``/ws`` event stream (:meth:`ComfyClient.events`).

Errors: no answer → :class:`~lorawb_core.errors.ServerUnreachable`; 5xx, a broken or non-JSON answer →
:class:`~lorawb_core.errors.ServerFailed`; 400 on ``/prompt`` → :class:`~lorawb_core.errors.PromptRejected` with
ComfyUI's ``node_errors``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from ..atomic import atomic_file
from ..errors import PromptRejected, ServerFailed, ServerUnreachable

MARKER_KEY = "lorawb_job"
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Located:
    """Where a prompt is on a server: ``"running"``, ``"pending"`` or ``"history"`` (finished; ``entry`` is its
    ``/history`` record)."""

    where: str
    prompt_id: str
    entry: dict[str, Any] | None = None


@dataclass(frozen=True)
class ServerEvent:
    """One ``/ws`` message: ComfyUI's ``type`` and ``data`` (``prompt_id`` lifted out when present)."""

    type: str
    data: dict[str, Any]

    @property
    def prompt_id(self) -> str | None:
        return self.data.get("prompt_id")


def format_node_errors(error: Any, node_errors: Any, prompt: dict[str, Any] | None = None) -> str:
    """ComfyUI's rejection as one readable text: the error, then each node's errors (``node 4 (KSampler): …``)."""
    lines = []
    if isinstance(error, dict):
        head = error.get("message") or error.get("type") or "prompt rejected"
        lines.append(f"{head}: {error['details']}" if error.get("details") else str(head))
    elif error:
        lines.append(str(error))
    for node, info in (node_errors or {}).items():
        cls = (info or {}).get("class_type") or ((prompt or {}).get(node) or {}).get("class_type") or "?"
        for err in (info or {}).get("errors", []) or []:
            detail = f" ({err['details']})" if err.get("details") else ""
            lines.append(f"node {node} ({cls}): {err.get('message', err.get('type', 'error'))}{detail}")
    return "; ".join(lines) or "ComfyUI rejected the prompt without saying why."


def history_error(entry: dict[str, Any]) -> str | None:
    """The reason a finished ``/history`` entry failed (``execution_error`` / ``execution_interrupted``), or None."""
    status = entry.get("status") or {}
    if status.get("status_str") == "success" or (status.get("completed") and status.get("status_str") != "error"):
        return None
    for name, data in status.get("messages") or []:
        if name == "execution_error":
            return (f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                    f"{data.get('exception_type', 'error')}: {data.get('exception_message', '').strip()}")
        if name == "execution_interrupted":
            return "interrupted on the server"
    return "the prompt did not complete on the server" if status else None


def write_atomic(target: Path, data: bytes) -> Path:
    """``data`` into ``target`` through a temp file beside it and a rename: a reader (or a full disk) never sees a
    partial image; a file of the same name is replaced only when the new one is complete.

    No fsync: a result image can always be made again (``lorawb jobs retry``), and an fsync per image costs more than
    running a small prompt (≈13 ms on a busy disk vs ≈5 ms for the prompt)."""
    with atomic_file(target, "wb", prefix=".lorawb-", suffix=".part") as f:
        f.write(data)
    return target


class ComfyClient:
    """One ComfyUI server (``url`` like ``http://127.0.0.1:8188``) over a shared aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, url: str, *, client_id: str = "",
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.client_id = client_id
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return f"ComfyClient({self.url!r})"

    async def _request(self, method: str, path: str, *, json_body: Any = None, params: dict | None = None,
                       raw: bool = False) -> Any:
        try:
            async with self.session.request(method, self.url + path, json=json_body, params=params,
                                            timeout=self.timeout) as resp:
                if resp.status >= 500:
                    text = (await resp.text())[:300]
                    raise ServerFailed(f"{self.url}{path} answered {resp.status} ({text.strip() or resp.reason}); "
                                       "the job will be retried.", self.url)
                body = await resp.read()
                if resp.status == 400 and path == "/prompt":
                    try:
                        data = json.loads(body)
                    except ValueError:
                        data = {"error": body[:300].decode(errors="replace")}
                    raise PromptRejected(format_node_errors(data.get("error"), data.get("node_errors"),
                                                            (json_body or {}).get("prompt")), self.url,
                                         data.get("node_errors") or {})
                if resp.status >= 400:
                    raise ServerFailed(f"{self.url}{path} answered {resp.status} {resp.reason}; is this a ComfyUI "
                                       "server?", self.url)
                if raw:
                    return body
                if not body.strip():
                    return None
                return json.loads(body)
        except (PromptRejected, ServerFailed):
            raise
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
            raise ServerUnreachable(f"no ComfyUI server answers at {self.url} ({exc.__class__.__name__}); start "
                                    "it or check the URL.", self.url) from None
        except asyncio.TimeoutError:
            raise ServerUnreachable(f"{self.url}{path} did not answer in {self.timeout.total:g} s.", self.url) from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise ServerFailed(f"{self.url}{path}: {exc.__class__.__name__}: {exc}", self.url) from None

    # ---- reading ----------------------------------------------------------------------------------------------
    async def queue_remaining(self) -> int:
        """``exec_info.queue_remaining`` of ``GET /prompt``: prompts pending or running there, anyone's."""
        data = await self._request("GET", "/prompt")
        return int(((data or {}).get("exec_info") or {}).get("queue_remaining", 0))

    async def queue(self) -> dict[str, list]:
        data = await self._request("GET", "/queue") or {}
        return {"running": data.get("queue_running") or [], "pending": data.get("queue_pending") or []}

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The ``/history`` entry of a finished prompt, or None while it is pending, running or unknown."""
        data = await self._request("GET", f"/history/{prompt_id}") or {}
        return data.get(prompt_id)

    async def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        return await self._request("GET", f"/object_info/{node_class}" if node_class else "/object_info") or {}

    async def locate(self, prompt_ids: Iterable[str], markers: Iterable[str] = ()) -> dict[str, Located]:
        """Which of ``prompt_ids`` / ``markers`` (``extra_data[MARKER_KEY]``) the server holds, keyed by the id or
        marker asked for. The queue is read before the history, so a prompt finishing in between is not missed."""
        ids, marks = set(prompt_ids), set(markers)
        found: dict[str, Located] = {}
        q = await self.queue()
        for where in ("running", "pending"):
            for item in q[where]:
                pid, extra = item[1], (item[3] if len(item) > 3 and isinstance(item[3], dict) else {})
                for key in (pid, extra.get(MARKER_KEY)):
                    if key in ids or key in marks:
                        found[key] = Located(where, pid)
        wanted = (ids | marks) - set(found)
        if not wanted:
            return found
        for pid in ids & wanted:  # cheap direct look-ups first
            entry = await self.history(pid)
            if entry is not None:
                found[pid] = Located("history", pid, entry)
        if marks - set(found):
            for pid, entry in (await self._request("GET", "/history") or {}).items():
                prompt = entry.get("prompt") or []
                extra = prompt[3] if len(prompt) > 3 and isinstance(prompt[3], dict) else {}
                if extra.get(MARKER_KEY) in marks:
                    found[extra[MARKER_KEY]] = Located("history", pid, entry)
        return found

    # ---- acting -----------------------------------------------------------------------------------------------
    async def submit(self, workflow: dict[str, Any], *, prompt_id: str, marker: str) -> str:
        """Queue ``workflow``; returns the prompt id the server uses (ours on current ComfyUI)."""
        body = {"prompt": workflow, "prompt_id": prompt_id, "client_id": self.client_id,
                "extra_data": {MARKER_KEY: marker}}
        data = await self._request("POST", "/prompt", json_body=body) or {}
        if not data.get("prompt_id"):
            raise ServerFailed(f"{self.url}/prompt accepted the prompt without a prompt_id: {data}", self.url)
        return str(data["prompt_id"])

    async def delete(self, prompt_ids: Iterable[str]) -> None:
        """Take pending prompts off the server's queue (running ones are interrupted with :meth:`interrupt`)."""
        await self._request("POST", "/queue", json_body={"delete": list(prompt_ids)})

    async def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt ``prompt_id`` if it is the one running (any running prompt when None); True if sent."""
        if prompt_id is not None:
            running = [item[1] for item in (await self.queue())["running"]]
            if prompt_id not in running:
                return False
        await self._request("POST", "/interrupt", json_body={"prompt_id": prompt_id} if prompt_id else {})
        return True

    async def view(self, image: dict[str, Any]) -> bytes:
        """``GET /view`` of one output image (``{"filename", "subfolder", "type"}`` from ``/history``)."""
        params = {"filename": image["filename"], "subfolder": image.get("subfolder", ""),
                  "type": image.get("type", "output")}
        return await self._request("GET", "/view", params=params, raw=True)

    async def download(self, image: dict[str, Any], target: Path) -> Path:
        """:meth:`view` into ``target``, atomically."""
        return write_atomic(target, await self.view(image))

    async def events(self) -> AsyncIterator[ServerEvent]:

        """The ``/ws`` stream for our ``client_id`` until the server closes it (text messages only; binary
        previews are skipped). Raises :class:`ServerUnreachable` when it cannot connect."""
        ws_url = self.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/ws"
        try:
            ws = await self.session.ws_connect(ws_url, params={"clientId": self.client_id}, heartbeat=20)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise ServerUnreachable(f"{ws_url}: no event stream ({exc.__class__.__name__}).", self.url) from None
        async with ws:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                    except ValueError:
                        continue
                    if isinstance(data, dict) and isinstance(data.get("data"), dict):
                        yield ServerEvent(str(data.get("type")), data["data"])
                elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
