"""The route table: every lorawb HTTP route in one declarative list, bound to any aiohttp router.

>>> from server import PromptServer                                   # inside ComfyUI   # doctest: +SKIP
>>> register_routes(PromptServer.instance.routes, service)                                # doctest: +SKIP
>>> app = web.Application(); register_routes(app, service)           # standalone/tests  # doctest: +SKIP

Paths are bare (``/lorawb/…``): current ComfyUI serves a copy of each under ``/api`` by itself. The profile and
compose routes are part of the table only when their core modules are installed (``features`` says which).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from ..service import LibraryService
from .http import MUTATING, Security, endpoint
from .library_routes import LibraryRoutes
from .merge_routes import MergeRoutes
from .profile_routes import ComposeRoutes, ProfileRoutes

log = logging.getLogger("lorawb")
_CORE = __name__.rsplit(".", 2)[0]  # the lorawb_core package, whatever the host named it


@dataclass(frozen=True)
class RouteDefinition:
    method: str
    path: str
    handler_name: str
    feature: str | None = None  # only registered when this optional core module is installed

    @property
    def mutating(self) -> bool:
        return self.method in MUTATING


R = RouteDefinition
ROUTES: tuple[RouteDefinition, ...] = (
    R("GET", "/lorawb/info", "info"),
    R("GET", "/lorawb/loras", "search"),
    R("GET", "/lorawb/facets", "facets"),
    R("GET", "/lorawb/duplicates", "duplicates"),
    R("GET", "/lorawb/loras/{stable_id}", "get_lora"),
    R("GET", "/lorawb/loras/{stable_id}/blocks", "get_blocks"),
    R("GET", "/lorawb/loras/{stable_id}/blocks.csv", "blocks_csv"),
    R("GET", "/lorawb/loras/{stable_id}/metadata", "get_metadata"),
    R("POST", "/lorawb/loras/{stable_id}/reindex", "reindex"),
    R("GET", "/lorawb/scan", "scan_status"),
    R("POST", "/lorawb/scan", "start_scan"),
    R("POST", "/lorawb/scan/cancel", "cancel_scan"),
    R("GET", "/lorawb/layouts", "layouts"),
    R("GET", "/lorawb/layouts/{layout_id}", "layout"),
    R("GET", "/lorawb/cache", "cache_stats"),
    R("DELETE", "/lorawb/cache", "cache_clear"),
    R("GET", "/lorawb/profiles", "list_profiles", "profiles"),
    R("POST", "/lorawb/profiles", "create_profile", "profiles"),
    R("POST", "/lorawb/profiles/import", "import_profiles", "profiles"),
    R("POST", "/lorawb/profiles/export", "export_profiles", "profiles"),
    R("GET", "/lorawb/profiles/{profile_id}", "get_profile", "profiles"),
    R("PUT", "/lorawb/profiles/{profile_id}", "update_profile", "profiles"),
    R("DELETE", "/lorawb/profiles/{profile_id}", "delete_profile", "profiles"),
    R("POST", "/lorawb/compose/check", "compose_check", "compose"),
    R("POST", "/lorawb/merge", "start_merge", "merge"),
    R("GET", "/lorawb/merge/{job_id}", "merge_status", "merge"),
)
OPTIONAL_MODULES = {"profiles": "profiles", "compose": "compose", "cache": "cache", "merge": "merge"}


def available_features() -> dict[str, bool]:
    """Which optional core modules (profiles, compose, cache) this build has and can import."""
    out = {}
    for feature, module in OPTIONAL_MODULES.items():
        name = f"{_CORE}.{module}"
        try:
            out[feature] = importlib.util.find_spec(name) is not None and importlib.import_module(name) is not None
        except Exception as exc:  # a broken optional module must not take the other routes down
            log.warning("lorawb: %s cannot be imported (%s: %s); its routes are not served", name,
                        type(exc).__name__, exc)
            out[feature] = False
    return out


class Handlers(LibraryRoutes, ProfileRoutes, ComposeRoutes, MergeRoutes):
    """Every handler of the table, as methods named by ``RouteDefinition.handler_name``."""


def route_table(features: dict[str, bool] | None = None) -> list[RouteDefinition]:
    features = available_features() if features is None else features
    return [r for r in ROUTES if r.feature is None or features.get(r.feature)]


def _bind(target: object, method: str, path: str, handler) -> None:
    if isinstance(target, web.RouteTableDef):
        target.route(method, path)(handler)
    elif isinstance(target, web.Application):
        target.router.add_route(method, path, handler)
    elif isinstance(target, web.UrlDispatcher):
        target.add_route(method, path, handler)
    else:
        raise TypeError(f"register_routes needs an aiohttp RouteTableDef, UrlDispatcher or Application, not "
                        f"{type(target).__name__}.")


def register_routes(target: web.RouteTableDef | web.UrlDispatcher | web.Application, service: LibraryService, *,
                    security: Security | None = None, hosts: Sequence[str] | None = None) -> list[RouteDefinition]:
    """Bind every route of the table to ``target``; returns the definitions bound.

    ``security``: the token rule and body limit; by default :meth:`Security.for_hosts` with ``hosts`` (None: ComfyUI's
    ``--listen`` when inside ComfyUI, else loopback) and ``LORAWB_TOKEN``.
    """
    security = security or Security.for_hosts(hosts)
    features = available_features()
    handlers = Handlers(service, features)
    table = route_table(features)
    for r in table:
        _bind(target, r.method, r.path, endpoint(getattr(handlers, r.handler_name), security=security,
                                                 mutating=r.mutating))
    return table
