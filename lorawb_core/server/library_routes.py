"""Handlers of the library, scan, layout, cache and info routes (bound by :mod:`.routes`).

Handlers parse and check the request, run the blocking work in the service's executor (SQLite, scans, hashing
never run on the event loop) and return plain data; :func:`.http.endpoint` turns it into JSON.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import re
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from ..cache import default_cache
from ..layouts import get_layout, list_layouts
from ..service import LibraryService, summary_to_dict
from .http import (
    SECURITY_KEY,
    BadRequest,
    Conflict,
    body_bool,
    q_bool,
    q_choice,
    q_int,
    q_str,
    read_json,
)

T = TypeVar("T")
STABLE_ID_RE = re.compile(r"[A-Za-z0-9]{2,8}(?:-[A-Za-z0-9]{1,8}){1,4}")
LAYOUT_ID_RE = re.compile(r"[a-z0-9_]{1,64}")
SORTS = ("relevance", "name", "added", "size", "strength")
STATES = ("pending", "ready", "error")
SHOW = {"present": False, "missing": True, "all": None}
MAX_LIMIT = 500
FACET_COLUMNS = {"family": "family", "variant": "variant", "layout": "layout_id", "format": "format",
                 "algorithm": "algorithm", "state": "scan_state", "category": "category"}


def stable_id_of(request: web.Request) -> str:
    value = request.match_info.get("stable_id", "")
    if not STABLE_ID_RE.fullmatch(value):
        raise BadRequest(f"{value[:60]!r} is not a stable ID (like SDX-CHR-001).", field="stable_id")
    return value.upper()


def list_item(entry: Any, spark: list[float] | None = None) -> dict[str, Any]:
    """A library row as the list shows it (the details route gives everything)."""
    return {"stable_id": entry.stable_id, "name": entry.name, "file_name": entry.file_name,
            "rel_path": entry.rel_path, "category": entry.category, "family": entry.family,
            "variant": entry.variant, "confidence": entry.confidence, "format": entry.format,
            "algorithm": entry.algorithm, "layout_id": entry.layout_id, "rank": entry.rank, "alpha": entry.alpha,
            "size": entry.size, "scan_state": entry.scan_state,
            "blocks_state": entry.scan_state if entry.scan_state in ("ready", "error") else "pending",
            "missing": entry.missing, "error": entry.error, "total_norm": entry.total_norm, "title": entry.title,
            "trigger_words": entry.trigger_words[:5], "spark": spark, "has_preview": bool(entry.preview)}


def sparklines(db: Any, entries: list[Any]) -> dict[int, list[float]]:
    """Block shares in layout order for the ready entries (one query)."""
    ids = [e.row_id for e in entries if e.scan_state == "ready" and e.row_id]
    out: dict[int, list[float]] = {}
    if not ids:
        return out
    sql = (f"SELECT lora_id, share FROM blocks WHERE lora_id IN ({','.join('?' * len(ids))}) "
           "ORDER BY lora_id, position")
    for lora_id, share in db.execute(sql, ids):
        out.setdefault(lora_id, []).append(round(share or 0.0, 4))
    return out


def block_rows(entry: Any) -> list[dict[str, Any]] | None:
    """One row per block of the LoRA's layout, in layout order (None while the blocks are pending)."""
    if entry.blocks is None:
        return None
    by_id = {b.block_id: b for b in entry.blocks}
    try:
        layout = get_layout(entry.layout_id)
    except LookupError:
        return [{"id": b.block_id, "label": b.block_id, "group": "", "position": b.position, "norm": b.norm,
                 "share": b.share, "module_count": b.module_count, "exact": b.exact} for b in entry.blocks]
    rows = []
    for pos, blk in enumerate(layout.blocks):
        b = by_id.get(blk.id)
        rows.append({"id": blk.id, "label": blk.label, "group": blk.group, "position": pos,
                     "norm": b.norm if b else 0.0, "share": b.share if b else 0.0,
                     "module_count": b.module_count if b else 0, "exact": b.exact if b else True})
    return rows


def _layout_dict(layout_id: str | None) -> dict[str, Any] | None:
    if not layout_id:
        return None
    try:
        return get_layout(layout_id).to_dict()
    except LookupError:
        return None


class LibraryRoutes:
    """Library, scan, layouts, cache and info handlers over one :class:`~lorawb_core.service.LibraryService`."""

    def __init__(self, service: LibraryService) -> None:
        self.service = service

    async def run_db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(db, *args, **kwargs)`` in the service's executor, with that thread's connection."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.service.executor,
                                          functools.partial(self.service.with_db, fn, *args, **kwargs))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.service.executor, functools.partial(fn, *args))

    # ---- info ---------------------------------------------------------------------------------------------------
    async def info(self, request: web.Request) -> dict[str, Any]:
        from .. import __version__

        def counts(db: Any) -> dict[str, int]:
            out = {"total": db["loras"].count}
            out["missing"] = db.execute("SELECT count(*) FROM loras WHERE missing = 1").fetchone()[0]
            out["present"] = out["total"] - out["missing"]
            for state, n in db.execute("SELECT scan_state, count(*) FROM loras WHERE missing = 0 GROUP BY scan_state"):
                out[state] = n
            return out

        security = request[SECURITY_KEY]
        return {"version": __version__, "database": self.service.db_path.name, "roots": self.service.roots(),
                "counts": await self.run_db(counts), "token_required": security.request_is_remote(request),
                "scan": self.service.scan_status()}

    # ---- library ------------------------------------------------------------------------------------------------
    async def search(self, request: web.Request) -> dict[str, Any]:
        from ..library.search import SearchQuery, search

        text = q_str(request, "q", "", max_len=500) or ""
        filters = {name: q_str(request, name) for name in ("family", "variant", "layout", "format", "algorithm",
                                                           "category")}
        q = SearchQuery(text=text, **filters, state=q_choice(request, "state", STATES),
                        missing=SHOW[q_choice(request, "show", tuple(SHOW), "present")],
                        duplicates=q_bool(request, "duplicates"),
                        sort=q_choice(request, "sort", SORTS, "relevance" if text.strip() else "name"),
                        descending=q_bool(request, "desc"), limit=q_int(request, "limit", 50, lo=1, hi=MAX_LIMIT),
                        offset=q_int(request, "offset", 0, lo=0, hi=10_000_000))
        with_spark = q_bool(request, "spark", True)

        def work(db: Any) -> dict[str, Any]:
            page = search(db, q)
            sparks = sparklines(db, page.items) if with_spark else {}
            return {"total": page.total, "offset": page.offset, "limit": page.limit,
                    "items": [list_item(e, sparks.get(e.row_id)) for e in page.items]}

        return await self.run_db(work)

    async def facets(self, request: web.Request) -> dict[str, Any]:
        def work(db: Any) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for name, column in FACET_COLUMNS.items():
                out[name] = {str(v): n for v, n in db.execute(
                    f"SELECT {column}, count(*) FROM loras WHERE missing = 0 GROUP BY {column} ORDER BY {column}")
                    if v is not None}
            out["missing"] = db.execute("SELECT count(*) FROM loras WHERE missing = 1").fetchone()[0]
            return out

        return await self.run_db(work)

    async def get_lora(self, request: web.Request) -> dict[str, Any]:
        from ..library.search import get_lora

        stable_id = stable_id_of(request)
        entry = await self.run_db(get_lora, stable_id)
        data = entry.to_dict()
        data["blocks"] = block_rows(entry)
        return data

    async def get_blocks(self, request: web.Request) -> dict[str, Any]:
        from ..library.search import get_lora

        entry = await self.run_db(get_lora, stable_id_of(request))
        return {"stable_id": entry.stable_id, "layout_id": entry.layout_id, "layout": _layout_dict(entry.layout_id),
                "blocks_state": entry.blocks_state, "total_norm": entry.total_norm,
                "unmapped_norm": entry.unmapped_norm, "blocks": block_rows(entry)}

    async def blocks_csv(self, request: web.Request) -> web.Response:
        from ..library.search import get_lora

        entry = await self.run_db(get_lora, stable_id_of(request))
        rows = block_rows(entry)
        if rows is None:
            raise Conflict(f"The blocks of {entry.stable_id} are not measured yet ({entry.blocks_state}); "
                           "rescan or reindex it first.", field="stable_id")
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["stable_id", "layout_id", "block_id", "group", "label", "position", "norm", "share",
                         "module_count", "exact"])
        for r in rows:  # only registry names and numbers: nothing from the file's metadata (no CSV formulas)
            writer.writerow([entry.stable_id, entry.layout_id, r["id"], r["group"], r["label"], r["position"],
                             "" if r["norm"] is None else f"{r['norm']:.6g}",
                             "" if r["share"] is None else f"{r['share']:.6g}", r["module_count"],
                             int(bool(r["exact"]))])
        return web.Response(text=buf.getvalue(), content_type="text/csv", charset="utf-8", headers={
            "Content-Disposition": f'attachment; filename="{entry.stable_id}-blocks.csv"',
            "Cache-Control": "no-store"})

    async def get_metadata(self, request: web.Request) -> dict[str, Any]:
        from ..library.search import get_lora

        entry = await self.run_db(get_lora, stable_id_of(request))
        meta = entry.metadata or {}
        return {"stable_id": entry.stable_id, "name": entry.name, "title": entry.title, "author": entry.author,
                "tags": entry.tags, "trigger_words": entry.trigger_words,
                "trigger_details": meta.get("trigger_words", []), "training": meta.get("training"),
                "metadata": meta, "family_evidence": entry.family_evidence}

    async def reindex(self, request: web.Request) -> dict[str, Any]:
        from ..library.scan import reindex
        from ..library.search import get_lora

        stable_id = stable_id_of(request)
        body = await read_json(request)
        structure_only = body_bool(body, "structure_only")
        service = self.service

        def work(db: Any) -> dict[str, Any]:
            summary = reindex(db, stable_id, structure_only=structure_only, categories=service.categories)
            entry = get_lora(db, stable_id)
            data = entry.to_dict()
            data["blocks"] = block_rows(entry)
            return {"summary": summary_to_dict(summary), "lora": data}

        return await self.run_db(work)

    async def duplicates(self, request: web.Request) -> dict[str, Any]:
        from ..library.search import duplicates

        groups = await self.run_db(duplicates)
        return {"groups": [{"addnet": g.addnet, "items": [list_item(e) for e in g.entries]} for g in groups]}

    # ---- scan ---------------------------------------------------------------------------------------------------
    async def scan_status(self, request: web.Request) -> dict[str, Any]:
        return self.service.scan_status()

    async def start_scan(self, request: web.Request) -> web.Response:
        from .http import json_response

        body = await read_json(request)
        status = self.service.start_scan(full=body_bool(body, "full"), structure_only=body_bool(body, "structure_only"))
        return json_response(status, 202 if status.get("started") else 200)

    async def cancel_scan(self, request: web.Request) -> dict[str, Any]:
        return self.service.cancel_scan()

    # ---- layouts ------------------------------------------------------------------------------------------------
    async def layouts(self, request: web.Request) -> dict[str, Any]:
        return {"layouts": [lay.to_dict() for lay in list_layouts()]}

    async def layout(self, request: web.Request) -> dict[str, Any]:
        layout_id = request.match_info.get("layout_id", "")
        if not LAYOUT_ID_RE.fullmatch(layout_id):
            raise BadRequest(f"{layout_id[:60]!r} is not a layout id (like sdxl_unet_12).", field="layout_id")
        return get_layout(layout_id).to_dict()

    # ---- cache --------------------------------------------------------------------------------------------------
    async def cache_stats(self, request: web.Request) -> dict[str, Any]:
        return (await self.run(default_cache().stats)).to_dict()

    async def cache_clear(self, request: web.Request) -> dict[str, Any]:
        cache = default_cache()
        await self.run(cache.clear)
        return {"cleared": True, "stats": (await self.run(cache.stats)).to_dict()}
