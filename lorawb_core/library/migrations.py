"""The library schema as numbered ``sqlite_utils`` migrations, applied at open.

Rules: a migration is never edited once released (``tests/fixtures/library_v1.sqlite3`` was written by
``m001`` alone and must keep upgrading); each one runs atomically with its record in ``_sqlite_migrations`` (the
schema-version table; ``PRAGMA user_version`` mirrors the count); the whole upgrade runs under ``BEGIN IMMEDIATE``
and re-reads what is pending once it holds the write lock, so two processes opening an old database at once do
not both migrate (the "duplicate column" race).

Tables after the last migration:

``loras``
    one row per file ever seen: ``path`` (unique), ``root``/``rel_path``/``category``, ``size``/``mtime_ns``/``inode``
    (the change test), ``stable_id`` (unique), hashes (``sha256``, ``addnet``, ``autov2``, ``autov3``), what the header
    tells (``family``, ``variant``, ``confidence``, ``format``, ``algorithm``, ``algorithms``,
    ``layout_id``, ``full_layout_id``, ``rank``, ``alpha``, ``module_count``, ``header_bytes``, ``needs_base``), text
    for search (``name``, ``sort_key``, ``file_name``, ``title``, ``author``, ``tags``, ``trigger_words``),
    ``problems`` (JSON), ``scan_state`` (``pending`` | ``ready`` | ``error``), ``error`` (the reason),
    ``total_norm``/``unmapped_norm``, ``first_seen``/``last_seen``/``measured_at`` (UTC ISO), ``missing`` (0/1),
    ``preview`` (the sidecar preview image found by scans or written by a preview job, m010);
    ``metadata`` and ``family_evidence`` are empty since m005 (moved to ``lora_details``).
``lora_details``
    the wide JSON of a row, kept out of the searched table: ``metadata`` (parsed training metadata),
    ``family_evidence`` (evidence, conflicts, reason, depth).
``blocks``
    one row per (LoRA, block of its layout) once phase (b) is done: ``position``, ``norm``, ``share``,
    ``module_count``, ``exact``.
``profiles``
    named block-weight vectors (read and written by :mod:`lorawb_core.profiles.store`): ``name``, ``layout_id``,
    ``weights`` (JSON), ``source``, ``description``, ``schedule`` (JSON block → ranges, m007), ``lora_id``
    (optional owner), ``created``/``updated``.
``id_sequences`` / ``known_ids``
    the last number used per ``<FAM>-<CAT>`` prefix, and IDs known from ledgers/imports not bound to a row yet.
``organize_runs`` / ``organize_steps`` (m009)
    the organize journal (:mod:`lorawb_core.organize.journal`): a run (``kind`` organize | undo | reconcile,
    ``state``, ``root``, ``drop_dir``, ``rule``, ``pid``, ``indexed``) and its steps (``action`` mkdir | move |
    write | remove | rmdir, ``src``/``dst``, ``sha256``, the index ``entry``, ``prior``/``written_sha`` of a write,
    ``state`` pending | done | rolled_back | undone | failed), each written before it acts; ``lora_details`` gains
    ``default_weight``, ``notes`` and ``config_mtime_ns`` (read from an organized folder's ``config.yaml``).
``loras_fts``
    FTS5 over name, file name, trigger words, tags, title, author (kept in sync by triggers), plus ``facets``: a
    generated column holding the filter values as words (``zzfsdxl zzlsdxl_unet_12 zzm0 …``) so a search with
    filters is one FTS5 query.
"""

from __future__ import annotations

import math
import os
import re

from sqlite_utils import Database, Migrations

from ..errors import LibraryError

MIGRATIONS = Migrations("lorawb")
MIGRATION_NAMES: list[str] = []
FTS_COLUMNS = ("name", "file_name", "trigger_words", "tags", "title", "author")
FTS_TOKENIZE = "unicode61 remove_diacritics 2"
FACETS = {"family": "zzf", "variant": "zzv", "layout_id": "zzl", "format": "zzo", "algorithm": "zza",
          "scan_state": "zzs", "category": "zzc", "missing": "zzm"}
FACET_DROP = "_-.+ /:"  # removed from facet values so each is one FTS token (the search does the same)
SORT_COLUMNS = ("sort_key", "first_seen", "size", "total_norm")
FILTER_COLUMNS = ("family", "variant", "layout_id", "format", "algorithm", "scan_state", "category")


def _migration(fn):
    MIGRATION_NAMES.append(fn.__name__)
    return MIGRATIONS()(fn)


@_migration
def m001_loras_and_blocks(db: Database) -> None:
    """Version 1 (lorawb 0.1 library preview): files, hashes, structure, block strengths."""
    db["loras"].create({
        "id": int, "path": str, "file_name": str, "size": int, "mtime_ns": int, "sha256": str, "addnet": str,
        "family": str, "format": str, "layout_id": str, "rank": int, "alpha": float, "metadata": str,
        "trigger_words": str, "first_seen": str, "last_seen": str, "missing": int, "scan_state": str,
        "stable_id": str,
    }, pk="id", not_null={"path", "missing", "scan_state"}, defaults={"missing": 0, "scan_state": "new"})
    db["loras"].create_index(["path"], unique=True)
    db["loras"].create_index(["stable_id"], unique=True)
    db["blocks"].create({"lora_id": int, "block": str, "strength": float}, pk=("lora_id", "block"),
                        foreign_keys=[("lora_id", "loras", "id")])


_V2_LORA_COLUMNS = {
    "root": str, "rel_path": str, "category": str, "inode": int, "variant": str, "confidence": str,
    "family_evidence": str, "algorithm": str, "algorithms": str, "full_layout_id": str, "module_count": int,
    "header_bytes": int, "needs_base": int, "autov2": str, "autov3": str, "name": str, "sort_key": str,
    "title": str, "author": str, "tags": str, "problems": str, "error": str, "total_norm": float,
    "unmapped_norm": float, "measured_at": str,
}


@_migration
def m002_identity_and_blocks(db: Database) -> None:
    """Roots and categories, inode, errors with reasons, full block rows, ID sequences and known IDs."""
    loras = db["loras"]
    for name, kind in _V2_LORA_COLUMNS.items():
        loras.add_column(name, kind)
    db["blocks"].transform(rename={"block": "block_id", "strength": "norm"})
    for name, kind in (("position", int), ("share", float), ("module_count", int), ("exact", int)):
        db["blocks"].add_column(name, kind)
    db.execute("UPDATE blocks SET exact = 1")
    # v1 states: new | done | failed
    db.execute("UPDATE loras SET scan_state = 'pending' WHERE scan_state = 'new'")
    db.execute("UPDATE loras SET scan_state = 'error', error = 'could not be read (reason not recorded by lorawb "
               "0.1; it is retried when the file changes)' WHERE scan_state = 'failed'")
    db.execute("UPDATE loras SET scan_state = 'ready' WHERE scan_state = 'done'")
    db.execute("UPDATE loras SET scan_state = 'pending' WHERE scan_state = 'ready' "
               "AND id NOT IN (SELECT lora_id FROM blocks)")
    # v1 ready rows: total norm and shares from the stored block norms, hashes shown the A1111 way
    energy: dict[int, float] = {}
    for row in db.query("SELECT lora_id, norm FROM blocks"):
        energy[row["lora_id"]] = energy.get(row["lora_id"], 0.0) + (row["norm"] or 0.0) ** 2
    for lora_id, e in energy.items():
        db.execute("UPDATE blocks SET share = CASE WHEN ? > 0 THEN norm * norm / ? ELSE 0 END WHERE lora_id = ?",
                   [e, e, lora_id])
        loras.update(lora_id, {"total_norm": math.sqrt(e), "unmapped_norm": 0.0})
    for row in db.query("SELECT id, path, sha256, addnet, layout_id FROM loras"):
        name = os.path.splitext(os.path.basename(row["path"]))[0]
        loras.update(row["id"], {
            "name": name, "sort_key": name.casefold(), "autov2": (row["sha256"] or "")[:10].upper() or None,
            "autov3": (row["addnet"] or "")[:12].upper() or None})
        if row["layout_id"]:
            _number_blocks(db, row["id"], row["layout_id"])
    db["id_sequences"].create({"prefix": str, "last": int}, pk="prefix", not_null={"last"})
    last: dict[str, int] = {}
    for row in db.query("SELECT stable_id FROM loras WHERE stable_id IS NOT NULL"):
        m = re.fullmatch(r"([A-Z0-9]{3}-[A-Z0-9]{3})-(\d+)", row["stable_id"])
        if m:
            last[m[1]] = max(last.get(m[1], 0), int(m[2]))
    db["id_sequences"].insert_all([{"prefix": p, "last": n} for p, n in sorted(last.items())])
    db["known_ids"].create({"stable_id": str, "addnet": str, "root": str, "rel_path": str, "size": int,
                            "mtime_ns": int, "origin": str}, pk="stable_id")
    db["known_ids"].create_index(["addnet"])
    db["known_ids"].create_index(["root", "rel_path"])


def _number_blocks(db: Database, lora_id: int, layout_id: str) -> None:
    from ..layouts import get_layout

    try:
        ids = get_layout(layout_id).block_ids
    except LookupError:
        return
    for pos, block_id in enumerate(ids):
        db.execute("UPDATE blocks SET position = ? WHERE lora_id = ? AND block_id = ?", [pos, lora_id, block_id])


@_migration
def m003_profiles(db: Database) -> None:
    """Block-weight profiles (the ``profiles`` table of :mod:`lorawb_core.profiles.store`)."""
    db["profiles"].create({
        "id": int, "name": str, "layout_id": str, "weights": str, "source": str, "lora_id": int,
        "created": str, "updated": str,
    }, pk="id", not_null={"name", "layout_id", "weights"}, foreign_keys=[("lora_id", "loras", "id")])
    db["profiles"].create_index(["lora_id"])
    db["profiles"].create_index(["layout_id", "name"], unique=True)


@_migration
def m004_search(db: Database) -> None:
    """Full-text search and the indexes behind filters and sorts."""
    loras = db["loras"]
    loras.enable_fts(FTS_COLUMNS, create_triggers=True, tokenize=FTS_TOKENIZE)
    for cols in (["missing", "sort_key"], ["first_seen"], ["size"], ["total_norm"], ["family"], ["layout_id"],
                 ["scan_state"], ["addnet"], ["inode"], ["root"]):
        loras.create_index(cols)
    db["blocks"].create_index(["lora_id", "position"])


def _squeeze(sql: str) -> str:
    for ch in FACET_DROP:
        sql = f"replace({sql}, '{ch}', '')"
    return sql


def facet_word(column: str, value: object) -> str:
    """The ``facets`` word for a filter value: as the generated column writes it."""
    text = str(value)
    for ch in FACET_DROP:
        text = text.replace(ch, "")
    return FACETS[column] + text


@_migration
def m005_lean_rows_and_facets(db: Database) -> None:
    """Search at 100k rows: wide JSON out of the searched table, filters as FTS words, one index per sort."""
    loras = db["loras"]
    loras.disable_fts()  # rebuilt below with the facets column (and no trigger work for the moves)
    db["lora_details"].create({"lora_id": int, "metadata": str, "family_evidence": str}, pk="lora_id",
                              foreign_keys=[("lora_id", "loras", "id")])
    db.execute("INSERT INTO lora_details (lora_id, metadata, family_evidence) SELECT id, metadata, family_evidence "
               "FROM loras WHERE metadata IS NOT NULL OR family_evidence IS NOT NULL")
    db.execute("UPDATE loras SET metadata = NULL, family_evidence = NULL")  # columns stay: no parent-table rebuild
    for name in ("first_seen", "size", "total_norm", "family", "layout_id", "scan_state", "addnet"):
        db.execute(f"DROP INDEX IF EXISTS idx_loras_{name}")
    # filter values as words, so FTS5 intersects words and filters and counts matches without touching rows
    # (sqlite-utils cannot add a generated column; the FTS index reads it like any other column)
    facets = " || ' ' || ".join(f"'{prefix}' || {_squeeze(f'coalesce({column}, {chr(39)}{chr(39)})')}"
                                for column, prefix in FACETS.items())
    db.execute(f"ALTER TABLE loras ADD COLUMN facets TEXT GENERATED ALWAYS AS ({facets}) VIRTUAL")
    loras.enable_fts([*FTS_COLUMNS, "facets"], create_triggers=True, tokenize=FTS_TOKENIZE)
    for sort in SORT_COLUMNS:  # every sort walks an index (present/missing first): no temp sort of the table
        loras.create_index(["missing", sort], if_not_exists=True)
    # ascending strength puts pending LoRAs (no strength yet) last: an index on the expression serves it
    db.execute("CREATE INDEX idx_loras_missing_strength_asc ON loras (missing, total_norm IS NULL, total_norm)")
    for column in FILTER_COLUMNS:  # counts per filter come from covering indexes
        loras.create_index([column, "missing"])
    loras.create_index(["addnet", "missing"])


def unknown_migrations(db: Database) -> list[str]:
    """Migrations recorded in the database that this lorawb does not have (it was written by a newer one)."""
    known = set(MIGRATION_NAMES)
    return [m.name for m in MIGRATIONS.applied(db) if m.name not in known]


def migrate(db: Database) -> list[str]:
    """Bring the schema up to date; returns the names applied (empty when it already was).

    Safe with several processes: the pending list is re-read under ``BEGIN IMMEDIATE``.
    """
    newer = unknown_migrations(db)
    if newer:
        raise LibraryError(f"{db.conn.execute('PRAGMA database_list').fetchone()[2]}: this library database was "
                           f"written by a newer lorawb (migrations {', '.join(newer)}); upgrade lorawb to open it.")
    if not MIGRATIONS.pending(db):
        return []
    db.execute("BEGIN IMMEDIATE")
    try:
        names = [m.name for m in MIGRATIONS.pending(db)]
        MIGRATIONS.apply(db)
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS.applied(db))}")
        db.execute("COMMIT")
    except BaseException:
        db.rollback()
        raise
    return names


@_migration
def m006_profile_descriptions(db: Database) -> None:
    """A one-line description per block-weight profile (shown next to its name)."""
    db["profiles"].add_column("description", str)


@_migration
def m007_profile_schedules(db: Database) -> None:
    """Block schedules per profile: JSON ``{block: ["0.5@0-40%", …]}`` (NULL: every block over the whole run)."""
    db["profiles"].add_column("schedule", str)


@_migration
def m008_batch_jobs(db: Database) -> None:
    """The batch queue (:mod:`lorawb_core.batch.jobs`): ``batches`` (kind, title, spec JSON, created, results_dir)
    and ``jobs`` (one ComfyUI prompt each: item key, workflow JSON, output node, group, state, attempts, server,
    prompt_id, error, timings, image paths JSON)."""
    db["batches"].create({"id": int, "kind": str, "title": str, "spec": str, "results_dir": str, "created": str},
                         pk="id", not_null={"kind", "spec", "created"})
    db["jobs"].create({
        "id": int, "batch_id": int, "item_key": str, "label": str, "params": str, "workflow": str,
        "output_node": str, "grp": str, "state": str, "attempts": int, "server": str, "prompt_id": str,
        "server_prompt_id": str, "error": str, "not_before": float, "created": str, "submitted_at": str,
        "started_at": str, "finished_at": str, "images": str,
    }, pk="id", not_null={"batch_id", "item_key", "workflow", "output_node", "state", "attempts"},
        defaults={"state": "queued", "attempts": 0, "grp": "", "label": ""},
        foreign_keys=[("batch_id", "batches", "id")])
    db["jobs"].create_index(["batch_id", "item_key"], unique=True)
    db["jobs"].create_index(["state", "batch_id"])


@_migration
def m009_organize_journal(db: Database) -> None:
    """The organize journal (:mod:`lorawb_core.organize.journal`): one row per run and per step, written before
    each step acts; and ``default_weight`` / ``notes`` read back from the LoRA folders' ``config.yaml``."""
    db["organize_runs"].create({
        "id": int, "kind": str, "state": str, "started": str, "finished": str, "root": str, "drop_dir": str,
        "rule": str, "pid": int, "undoes": int, "indexed": int, "summary": str,
    }, pk="id", not_null={"kind", "state", "started"}, defaults={"indexed": 0})
    db["organize_steps"].create({
        "id": int, "run_id": int, "seq": int, "action": str, "src": str, "dst": str, "sha256": str, "size": int,
        "mtime_ns": int, "entry": str, "prior": str, "written_sha": str, "state": str, "note": str,
    }, pk="id", not_null={"run_id", "seq", "action", "state"}, foreign_keys=[("run_id", "organize_runs", "id")])
    db["organize_steps"].create_index(["run_id", "seq"], unique=True)
    db["organize_steps"].create_index(["state"])
    db["lora_details"].add_column("default_weight", float)
    db["lora_details"].add_column("notes", str)
    db["lora_details"].add_column("config_mtime_ns", int)  # the config.yaml these came from (re-read when it changes)


@_migration
def m010_lora_previews(db: Database) -> None:
    """The preview image of each LoRA: the absolute path of its sidecar (``<stem>.preview.png`` …), NULL for none."""
    db["loras"].add_column("preview", str)
