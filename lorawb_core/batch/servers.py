"""Which ComfyUI servers a batch runs on, and how: the queue's settings.

First match wins for the server list:

1. the ``servers`` argument (``--server URL`` repeated on the command line);
2. ``LORAWB_SERVERS``: URLs separated by commas or spaces;
3. ``"servers"`` in the lorawb config file (:func:`lorawb_core.library.config.config_path`): URLs, or objects
   ``{"url": …, "num_gpus": 1, "num_cpus": 1}`` (the resources a Ray actor for that server asks for);
4. inside ComfyUI: the host itself (``http://127.0.0.1:<its port>``);
5. ``http://127.0.0.1:8188``.

Other config keys: ``"batch_backend"`` (``"builtin"``, the default, or ``"ray"``; ``LORAWB_BATCH_BACKEND`` wins) and
``"jobs_in_flight"`` (prompts per server at once, default 2)::

    {"servers": ["http://127.0.0.1:8188", {"url": "http://10.0.0.7:8188", "num_gpus": 1}], "batch_backend": "ray"}
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError

DEFAULT_SERVER = "http://127.0.0.1:8188"
BACKENDS = ("builtin", "ray")
DEFAULT_IN_FLIGHT = 2


@dataclass(frozen=True)
class ServerSpec:
    url: str
    resources: dict[str, float] = field(default_factory=dict)
    """Ray actor options for this server (``num_gpus``, ``num_cpus``, custom ``resources``); unused by the built-in
    dispatcher."""


@dataclass(frozen=True)
class QueueSettings:
    servers: tuple[ServerSpec, ...]
    backend: str = "builtin"
    in_flight: int = DEFAULT_IN_FLIGHT

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        if re.match(r"^[\w.\-\[\]:]+$", url):  # host:port without a scheme
            return "http://" + url
        raise UsageError(f"{url!r} is not a ComfyUI server URL; write it like http://127.0.0.1:8188.")
    return url


def _raw_config() -> dict[str, Any]:
    from ..library.config import config_path

    p = config_path()
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"{p}: cannot read the lorawb config file ({exc}); fix or delete it.") from None
    return raw if isinstance(raw, dict) else {}


def _spec(entry: Any) -> ServerSpec:
    if isinstance(entry, str):
        return ServerSpec(normalize_url(entry))
    if isinstance(entry, dict) and isinstance(entry.get("url"), str):
        res = {k: float(v) for k, v in entry.items() if k in ("num_gpus", "num_cpus") and isinstance(v, (int, float))}
        return ServerSpec(normalize_url(entry["url"]), res)
    raise UsageError(f"a 'servers' entry must be a URL or {{\"url\": …, \"num_gpus\": …}}, not {entry!r}.")


def comfy_host_url() -> str | None:
    """The URL of the ComfyUI this process runs inside, or None outside ComfyUI."""
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None:
        return None
    args = getattr(sys.modules.get("comfy.cli_args"), "args", None)  # the 2024 server keeps no port of its own
    port = getattr(instance, "port", None) or getattr(args, "port", None)
    if not port:
        return None
    address = getattr(instance, "address", None) or getattr(args, "listen", None) or "127.0.0.1"
    address = str(address).split(",")[0].strip()
    if address in ("0.0.0.0", "::", ""):
        address = "127.0.0.1"
    return f"http://{'[' + address + ']' if ':' in address else address}:{port}"


def queue_settings(servers: Sequence[str] | None = None, *, backend: str | None = None,
                   in_flight: int | None = None) -> QueueSettings:
    """The settings for a run: arguments first, then the environment, the config file, the host, the default."""
    raw = _raw_config()
    if servers:
        specs = tuple(ServerSpec(normalize_url(u)) for u in servers)
    elif os.environ.get("LORAWB_SERVERS", "").strip():
        specs = tuple(ServerSpec(normalize_url(u)) for u in re.split(r"[,\s]+", os.environ["LORAWB_SERVERS"]) if u)
    elif raw.get("servers"):
        if not isinstance(raw["servers"], list):
            raise UsageError("'servers' in the lorawb config file must be a list of URLs.")
        specs = tuple(_spec(e) for e in raw["servers"])
    else:
        specs = (ServerSpec(comfy_host_url() or DEFAULT_SERVER),)
    backend = backend or os.environ.get("LORAWB_BATCH_BACKEND") or raw.get("batch_backend") or "builtin"
    if backend not in BACKENDS:
        raise UsageError(f"unknown batch backend {backend!r}; choose {' or '.join(BACKENDS)}.")
    k = in_flight if in_flight is not None else raw.get("jobs_in_flight", DEFAULT_IN_FLIGHT)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 64:
        raise UsageError(f"jobs in flight per server must be a whole number from 1 to 64, not {k!r}.")
    return QueueSettings(specs, backend, k)
