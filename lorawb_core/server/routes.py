"""The route table: every lorawb HTTP route in one declarative list, bound to any aiohttp router.

>>> from server import PromptServer                                   # inside ComfyUI   # doctest: +SKIP
>>> register_routes(PromptServer.instance.routes, service)                                # doctest: +SKIP
>>> app = web.Application(); register_routes(app, service)           # standalone/tests  # doctest: +SKIP

Paths are bare (``/lorawb/…``): current ComfyUI serves a copy of each under ``/api`` by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from ..service import LibraryService
from .batch_routes import BatchRoutes
from .combined_routes import CombinedProfileRoutes
from .http import MUTATING, Security, endpoint
from .job_routes import JobRoutes
from .library_routes import LibraryRoutes
from .merge_routes import MergeRoutes
from .organize_routes import OrganizeRoutes
from .plan_routes import PlanRoutes
from .preview_routes import PreviewRoutes
from .profile_routes import ComposeRoutes, ProfileRoutes


@dataclass(frozen=True)
class RouteDefinition:
    method: str
    path: str
    handler_name: str

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
    R("GET", "/lorawb/loras/{stable_id}/preview", "get_preview"),
    R("POST", "/lorawb/loras/{stable_id}/reindex", "reindex"),
    R("GET", "/lorawb/scan", "scan_status"),
    R("POST", "/lorawb/scan", "start_scan"),
    R("POST", "/lorawb/scan/cancel", "cancel_scan"),
    R("GET", "/lorawb/layouts", "layouts"),
    R("GET", "/lorawb/layouts/{layout_id}", "layout"),
    R("GET", "/lorawb/cache", "cache_stats"),
    R("DELETE", "/lorawb/cache", "cache_clear"),
    R("GET", "/lorawb/profiles", "list_profiles"),
    R("POST", "/lorawb/profiles", "create_profile"),
    R("POST", "/lorawb/profiles/import", "import_profiles"),
    R("POST", "/lorawb/profiles/export", "export_profiles"),
    R("GET", "/lorawb/profiles/{profile_id}", "get_profile"),
    R("PUT", "/lorawb/profiles/{profile_id}", "update_profile"),
    R("DELETE", "/lorawb/profiles/{profile_id}", "delete_profile"),
    R("POST", "/lorawb/compose/check", "compose_check"),
    R("POST", "/lorawb/compose/profile", "save_combined_profile"),
    R("POST", "/lorawb/merge", "start_merge"),
    R("GET", "/lorawb/merge/{job_id}", "merge_status"),
    R("POST", "/lorawb/organize/plan", "organize_plan"),
    R("POST", "/lorawb/organize", "start_organize"),
    R("GET", "/lorawb/organize/runs", "organize_runs"),
    R("POST", "/lorawb/organize/undo", "organize_undo"),
    R("GET", "/lorawb/organize/reconcile", "organize_reconcile"),
    R("POST", "/lorawb/organize/reconcile", "organize_reconcile"),
    R("GET", "/lorawb/organize/{job_id}", "organize_status"),
    R("GET", "/lorawb/jobs", "list_jobs"),
    R("POST", "/lorawb/jobs/run", "run_jobs"),
    R("GET", "/lorawb/jobs/{job_id}", "get_job"),
    R("POST", "/lorawb/jobs/{job_id}/cancel", "cancel_job"),
    R("POST", "/lorawb/jobs/{job_id}/retry", "retry_job"),
    R("GET", "/lorawb/batches/{batch_id}", "get_batch"),
    R("GET", "/lorawb/batches/{batch_id}/file", "batch_file"),
    R("POST", "/lorawb/batches/{batch_id}/cancel", "cancel_batch"),
    R("POST", "/lorawb/batches/{batch_id}/retry", "retry_batch"),
    R("POST", "/lorawb/batches/{batch_id}/finish", "finish_batch"),
    R("POST", "/lorawb/plans/previews", "plan_previews"),
    R("POST", "/lorawb/plans/ab", "plan_ab"),
    R("POST", "/lorawb/plans/xy", "plan_xy"),
    R("GET", "/lorawb/batch-settings", "get_batch_settings"),
    R("PUT", "/lorawb/batch-settings", "put_batch_settings"),
)


class Handlers(LibraryRoutes, ProfileRoutes, ComposeRoutes, MergeRoutes, CombinedProfileRoutes, OrganizeRoutes,
               JobRoutes, PreviewRoutes, PlanRoutes, BatchRoutes):
    """Every handler of the table, as methods named by ``RouteDefinition.handler_name``."""


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
    handlers = Handlers(service)
    for r in ROUTES:
        _bind(target, r.method, r.path, endpoint(getattr(handlers, r.handler_name), security=security,
                                                 mutating=r.mutating))
    return list(ROUTES)
