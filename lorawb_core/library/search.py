"""Finding LoRAs: full-text search (FTS5), filters, sorts, pagination; one LoRA with its blocks; duplicates."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlite_utils import Database

from ..errors import InvalidValue, NotInLibrary, UsageError
from .migrations import FTS_COLUMNS, facet_word

SORTS = {  # name → (ORDER BY ascending, descending, the index that serves it); ties broken by row id
    "name": ("sort_key, id", "sort_key DESC, id DESC", "idx_loras_missing_sort_key"),
    "added": ("first_seen, id", "first_seen DESC, id DESC", "idx_loras_missing_first_seen"),
    "size": ("size, id", "size DESC, id DESC", "idx_loras_missing_size"),
    # pending LoRAs have no strength yet: last in both directions (NULL sorts first in SQLite)
    "strength": ("total_norm IS NULL, total_norm, id", "total_norm DESC, id DESC"),
}
_STRENGTH_INDEX = ("idx_loras_missing_strength_asc", "idx_loras_missing_total_norm")
SMALL_MATCH = 3000  # up to this many matches, rows are fetched by rowid and sorted; above, the sort index is walked
FILTERS = ("family", "variant", "layout", "format", "algorithm", "state", "category")
_COLUMN = {"layout": "layout_id", "state": "scan_state"}
LIST_COLUMNS = ("id", "stable_id", "name", "path", "root", "rel_path", "file_name", "category", "family", "variant",
                "confidence", "format", "algorithm", "algorithms", "layout_id", "full_layout_id", "rank", "alpha",
                "module_count", "size", "mtime_ns", "sha256", "addnet", "autov2", "autov3", "title", "author", "tags",
                "trigger_words", "scan_state", "error", "missing", "total_norm", "unmapped_norm", "first_seen",
                "last_seen", "measured_at", "problems", "preview")
_DUPLICATED = ("addnet IN (SELECT addnet FROM loras INDEXED BY idx_loras_addnet_missing WHERE addnet IS NOT NULL "
               "AND missing = 0 GROUP BY addnet HAVING count(*) > 1)")


@dataclass
class BlockRow:
    block_id: str
    position: int | None
    norm: float | None
    share: float | None
    module_count: int | None
    exact: bool


@dataclass
class LoraEntry:
    """One library row. ``blocks`` is None unless the LoRA is ``ready``: pending blocks are never shown as known."""

    stable_id: str | None
    name: str | None
    path: str
    file_name: str | None
    root: str | None
    rel_path: str | None
    category: str | None
    family: str | None
    variant: str | None
    confidence: str | None
    format: str | None
    algorithm: str | None
    algorithms: dict[str, int]
    layout_id: str | None
    full_layout_id: str | None
    rank: int | None
    alpha: float | None
    module_count: int | None
    size: int | None
    mtime_ns: int | None
    sha256: str | None
    addnet: str | None
    autov2: str | None
    autov3: str | None
    title: str | None
    author: str | None
    tags: list[str]
    trigger_words: list[str]
    scan_state: str
    error: str | None
    missing: bool
    total_norm: float | None
    unmapped_norm: float | None
    first_seen: str | None
    last_seen: str | None
    measured_at: str | None
    problems: list[str]
    row_id: int = 0
    preview: str | None = None  # the preview image next to the file (``<stem>.preview.png`` …), if any
    blocks: list[BlockRow] | None = None
    metadata: dict[str, Any] | None = None
    family_evidence: dict[str, Any] | None = None
    duplicates: list[str] = field(default_factory=list)  # paths of present files with the same addnet hash
    default_weight: float | None = None  # from the LoRA folder's config.yaml (organize), hand edits included
    notes: str | None = None

    @property
    def blocks_state(self) -> str:
        return "ready" if self.blocks is not None else ("error" if self.scan_state == "error" else "pending")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocks_state"] = self.blocks_state
        d.pop("row_id")
        return d


def _loads(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def entry_from_row(row: dict[str, Any]) -> LoraEntry:
    values = {k: row.get(k) for k in LIST_COLUMNS if k != "id"}
    values.update(algorithms=_loads(row.get("algorithms"), {}), tags=_loads(row.get("tags"), []),
                  trigger_words=_loads(row.get("trigger_words"), []), problems=_loads(row.get("problems"), []),
                  missing=bool(row.get("missing")), scan_state=row.get("scan_state") or "pending",
                  row_id=row.get("id") or 0)
    if not values["name"]:  # an unreadable file has no name from its header: show its file name
        file_name = values["file_name"] or os.path.basename(values["path"] or "")
        values["name"] = os.path.splitext(file_name)[0] or file_name or None
    return LoraEntry(**values)


@dataclass
class SearchQuery:
    """What to look for. ``text`` is matched as word prefixes against name, file name, trigger words, tags, title
    and author; ``missing`` False = present files only, True = missing only, None = both."""

    text: str = ""
    family: str | None = None
    variant: str | None = None
    layout: str | None = None
    format: str | None = None
    algorithm: str | None = None
    state: str | None = None
    category: str | None = None
    missing: bool | None = False
    duplicates: bool = False
    sort: str | None = None  # name (default) | added | size | strength | relevance (FTS5 bm25; only with text)
    descending: bool = False
    limit: int = 50
    offset: int = 0


@dataclass
class SearchPage:
    items: list[LoraEntry]
    total: int
    offset: int
    limit: int

    @property
    def has_more(self) -> bool:
        return self.offset + len(self.items) < self.total


# white space, control characters (NUL ends an FTS5 query string early: "unterminated string") and lone surrogates
# (undecodable command-line bytes, which SQLite cannot take) all separate words
_SEPARATORS = re.compile(r"[\s\x00-\x1f\x7f-\x9f\ud800-\udfff]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def fts_query(text: str) -> str:
    """User text → FTS5 query: every word must match as a prefix (``"char"*``); operators are not interpreted and
    control characters separate words."""
    terms = [t.replace('"', '""') for t in _SEPARATORS.split(text) if t.strip('"')]
    return " ".join(f'"{t}"*' for t in terms)


def check_filters(q: SearchQuery) -> None:
    """Refuse a filter value with a control character (no family, layout, format … name has one)."""
    for name in FILTERS:
        value = getattr(q, name)
        if isinstance(value, str) and _CONTROL.search(value):
            raise InvalidValue(f"The {name} filter {value[:40]!r} contains a control character; use a {name} as "
                               "`lorawb search --json` lists it.", field=name)


def _where(q: SearchQuery) -> tuple[list[str], dict[str, Any]]:
    clauses, args = [], {}
    for name in FILTERS:
        value = getattr(q, name)
        if value is not None and value != "":
            clauses.append(f"{_COLUMN.get(name, name)} = :{name}")
            args[name] = value
    if q.duplicates:
        clauses.append(_DUPLICATED)
    if q.missing is not None:
        clauses.append("missing = :missing")
        args["missing"] = int(q.missing)
    return clauses, args


_MATCH = "id IN (SELECT rowid FROM loras_fts WHERE loras_fts MATCH :query)"


def _full_text(q: SearchQuery, words: str) -> str:
    """The FTS5 query: the words against the text columns, every filter as a word of the ``facets`` column."""
    parts = [f"{{{' '.join(FTS_COLUMNS)}}} : ({words})"]
    for name in FILTERS:
        value = getattr(q, name)
        if value is not None and value != "":
            column = _COLUMN.get(name, name)
            parts.append('facets : "' + facet_word(column, value).replace('"', '""') + '"')
    if q.missing is not None:
        parts.append(f'facets : "{facet_word("missing", int(q.missing))}"')
    return " AND ".join(parts)


def search(db: Database, query: SearchQuery | None = None, **kwargs: Any) -> SearchPage:
    """Search the library; pass a :class:`SearchQuery` or its fields as keywords (``search(db, text="anime",
    family="sdxl", sort="added", descending=True, limit=20)``)."""
    q = query or SearchQuery(**kwargs)
    check_filters(q)
    words = fts_query(q.text or "")
    sort = q.sort or "name"
    if sort not in SORTS and sort != "relevance":
        raise UsageError(f"Unknown sort {sort!r}; use one of {', '.join(SORTS)}, relevance.")
    if q.limit < 1 or q.offset < 0:
        raise UsageError("limit must be at least 1 and offset at least 0.")
    loras = db["loras"]
    select = ", ".join(LIST_COLUMNS)
    if not words:
        clauses, args = _where(q)
        asc, desc, *index = SORTS["name" if sort == "relevance" else sort]
        order = desc if q.descending else asc
        where = " AND ".join(clauses) or None
        total = loras.count_where(where, args) if where else loras.count
        if where and total > SMALL_MATCH and q.missing is not None:
            # a common filter value: walk the sort index and keep the matching rows, as for word searches (the
            # planner would take the filter's index and sort every match)
            index_name = index[0] if index else _STRENGTH_INDEX[q.descending]
            rows = db.query(f"SELECT {select} FROM loras INDEXED BY {index_name} WHERE {where} ORDER BY {order} "
                            f"LIMIT {int(q.limit)} OFFSET {int(q.offset)}", args)
        else:
            rows = loras.rows_where(where, args, order_by=order, limit=q.limit, offset=q.offset, select=select)
        return SearchPage([entry_from_row(r) for r in rows], total, q.offset, q.limit)
    text = _full_text(q, words)
    where, args = _MATCH, {"query": text}
    if q.duplicates:
        where += f" AND {_DUPLICATED}"
        total = loras.count_where(where, args)
    else:
        total = db.execute("SELECT count(*) FROM loras_fts WHERE loras_fts MATCH :query", args).fetchone()[0]
    if total == 0:
        return SearchPage([], 0, q.offset, q.limit)
    if sort == "relevance":  # FTS5 bm25 over every match: exact ranking, costs more on very common words
        rows = loras.search(text, columns=LIST_COLUMNS, limit=q.limit, offset=q.offset,
                            where=_DUPLICATED if q.duplicates else None,
                            order_by='"loras_fts".rank DESC' if q.descending else None)
        return SearchPage([entry_from_row(r) for r in rows], total, q.offset, q.limit)
    asc, desc, *index = SORTS[sort]
    order = desc if q.descending else asc
    if total > SMALL_MATCH and q.missing is not None:
        # many matches: walk the sort index and keep the matching rows (stops after offset + limit of them)
        index_name = index[0] if index else _STRENGTH_INDEX[q.descending]
        args["missing"] = int(q.missing)
        rows = db.query(f"SELECT {select} FROM loras INDEXED BY {index_name} WHERE missing = :missing AND {where} "
                        f"ORDER BY {order} LIMIT {int(q.limit)} OFFSET {int(q.offset)}", args)
    else:  # few matches: fetch them by rowid and sort them
        rows = loras.rows_where(where, args, order_by=order, limit=q.limit, offset=q.offset, select=select)
    return SearchPage([entry_from_row(r) for r in rows], total, q.offset, q.limit)


def get_lora(db: Database, stable_id: str) -> LoraEntry:
    """One LoRA by stable ID, with metadata, family evidence, duplicates and (when ready) its blocks."""
    rows = list(db["loras"].rows_where("stable_id = ?", [stable_id.strip().upper()]))
    if not rows:
        raise NotInLibrary(f"No LoRA with stable ID {stable_id!r} in the library; find it with `lorawb search`.")
    row = rows[0]
    entry = entry_from_row(row)
    details = db.execute("SELECT metadata, family_evidence, default_weight, notes FROM lora_details WHERE "
                         "lora_id = ?", [row["id"]]).fetchone() or (None, None, None, None)
    entry.metadata = _loads(details[0], None)
    entry.family_evidence = _loads(details[1], None)
    entry.default_weight, entry.notes = details[2], details[3]
    if entry.scan_state == "ready":
        entry.blocks = [BlockRow(r["block_id"], r["position"], r["norm"], r["share"], r["module_count"],
                                 bool(r["exact"]))
                        for r in db["blocks"].rows_where("lora_id = ?", [row["id"]], order_by="position")]
    if entry.addnet:
        entry.duplicates = [r["path"] for r in db["loras"].rows_where(
            "addnet = ? AND id != ? AND missing = 0", [entry.addnet, row["id"]], order_by="path", select="path")]
    return entry


@dataclass
class DuplicateGroup:
    addnet: str
    entries: list[LoraEntry]


def duplicates(db: Database) -> list[DuplicateGroup]:
    """Present files sharing an addnet hash (same tensor data): listed, never merged."""
    groups: dict[str, list[LoraEntry]] = {}
    for row in db["loras"].rows_where(f"missing = 0 AND {_DUPLICATED}", order_by="addnet, path",
                                      select=", ".join(LIST_COLUMNS)):
        groups.setdefault(row["addnet"], []).append(entry_from_row(row))
    return [DuplicateGroup(h, e) for h, e in groups.items()]
