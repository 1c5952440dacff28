"""lorawb over HTTP: one set of aiohttp handlers under ``/lorawb/``, mounted on ComfyUI's ``PromptServer`` routes or
on the standalone app of ``lorawb serve``.

* :mod:`.routes` — the declarative table and :func:`register_routes` (ComfyUI calls it with
  ``PromptServer.instance.routes``);
* :mod:`.http` — the one error → JSON mapping, the token rule, body/query parsing;
* :mod:`.library_routes` — library, scan, layouts, cache and info handlers;
* :mod:`.events` — server-sent events for the standalone server;
* :mod:`.app` — the standalone application (routes, ``/lorawb/ui``, ``/lorawb/static/``, ``/lorawb/events``);
* :mod:`.cli` — ``lorawb serve``.

Names are loaded on first use, so ``lorawb`` commands that do not serve never import aiohttp.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ROUTES", "RouteDefinition", "Security", "create_app", "register_routes"]
_WHERE = {"ROUTES": ".routes", "RouteDefinition": ".routes", "register_routes": ".routes", "Security": ".http",
          "create_app": ".app"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_WHERE[name], __name__), name)
