"""Stable IDs (``FLX-CLT-057``) and the ID ledger that travels with the library.

Format ``<FAM>-<CAT>-<NNN>``:

* ``FAM``: the ``id_code`` of the base-model family's record (:mod:`lorawb_core.families`) when the file was first
  indexed (:data:`FAMILY_CODES`): sd15 → SD1, sd2 → SD2, sdxl → SDX, sdxl_refiner → SDR, sd3 → SD3, flux → FLX,
  wan → WAN, hunyuan_video → HYV, anything else → UNK.
* ``CAT``: from the file's folders under its library root, first level first. Each folder name is normalised
  (ASCII-folded, lower case, only a–z and 0–9 kept: ``"Sd 1.5"`` → ``sd15``) and looked up in the category mapping
  (:data:`DEFAULT_CATEGORIES`, extended by the config file's ``categories``). A code is used as is; an empty code
  means "not a category, look at the next level" (the defaults skip folders named after a base model: ``flux``,
  ``sdxl``, ``pony``, …). A folder that is not in the mapping gives the first three letters/digits of its folded name
  in upper case (padded with ``X``). A file at the root, or below skipped folders only, gets ``GEN``.
* ``NNN``: a sequence per ``FAM-CAT`` prefix, zero-padded to at least three digits, never reused: the last number
  handed out per prefix is kept (``id_sequences``) and in every ledger, so a retired ID is never given again.

An ID never changes once given, even when the file moves to another folder or is re-detected as another family.

Determinism: a scan assigns new IDs in sorted order of (root, relative path), so indexing the same library into a
fresh database yields the same IDs. Deleting the database loses nothing: each root holds a ledger,
``.lorawb-ids.json`` (written atomically after every scan phase), mapping stable IDs to relative paths and addnet
hashes; a scan loads it first and gives a file the ID the ledger holds for its path, or, once hashed, for its addnet
hash. ``lorawb ids export|import`` moves the same data between databases.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from ..errors import UsageError
from ..families import FAMILIES, UNKNOWN, UNKNOWN_ID_CODE, id_code_of

FAMILY_CODES = {**{f.code: f.id_code for f in FAMILIES.values()}, UNKNOWN: UNKNOWN_ID_CODE}
GENERAL = "GEN"
ID_RE = re.compile(r"([A-Z0-9]{3}-[A-Z0-9]{3})-(\d{3,})")
LEDGER_NAME = ".lorawb-ids.json"
LEDGER_FORMAT = "lorawb-ids"

_SKIP = ("sd1", "sd15", "sd1x", "sd2", "sd21", "sd2x", "sdxl", "xl", "pony", "ponyxl", "illustrious", "noobai",
         "sd3", "sd35", "flux", "flux1", "fluxdev", "wan", "wan21", "wan22", "hunyuan", "hunyuanvideo", "video",
         "lora", "loras")
_NAMED = {
    "CHR": ("characters", "character", "chars", "char", "people", "person", "persons", "celebrities", "celebrity"),
    "STY": ("styles", "style", "artstyles", "artstyle", "artists", "artist"),
    "CPT": ("concepts", "concept"),
    "CLT": ("clothing", "clothes", "outfits", "outfit", "costumes", "costume", "fashion"),
    "POS": ("poses", "pose"),
    "BKG": ("backgrounds", "background", "scenery", "scenes", "scene", "locations", "places"),
    "OBJ": ("objects", "object", "items", "props"),
    "ANI": ("animals", "animal", "creatures"),
    "VEH": ("vehicles", "vehicle"),
    "EFX": ("effects", "effect", "fx"),
    "LIT": ("lighting", "light"),
    "TOL": ("tools", "tool", "utility", "utilities", "sliders", "slider", "helpers"),
    "QUA": ("quality", "detail", "details", "enhancers"),
}
DEFAULT_CATEGORIES: dict[str, str] = {**{k: "" for k in _SKIP},
                                      **{name: code for code, names in _NAMED.items() for name in names}}


def family_code(family: str | None) -> str:
    return id_code_of(family)


def fold(name: str) -> str:
    """Folder name → mapping key: ASCII-folded, lower case, letters and digits only."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", ascii_name.lower())


def category_mapping(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The default mapping extended by ``extra`` (keys folded, codes checked)."""
    out = dict(DEFAULT_CATEGORIES)
    for key, code in (extra or {}).items():
        code = code.strip().upper()
        if code and not re.fullmatch(r"[A-Z0-9]{3}", code):
            raise UsageError(f"Category code {code!r} for folder {key!r} must be three letters or digits (or \"\" "
                             "to skip that folder level).")
        out[fold(key)] = code
    return out


def category_for(rel_path: str, mapping: Mapping[str, str] | None = None) -> str:
    """The three-letter category of a file from its path relative to the library root (``/``-separated)."""
    mapping = DEFAULT_CATEGORIES if mapping is None else mapping
    for folder in rel_path.split("/")[:-1]:
        key = fold(folder)
        if not key:
            continue
        if key in mapping:
            if mapping[key]:
                return mapping[key]
            continue
        return key[:3].upper().ljust(3, "X")
    return GENERAL


def format_id(prefix: str, number: int) -> str:
    return f"{prefix}-{number:03d}"


def parse_id(stable_id: str) -> tuple[str, int] | None:
    """``"FLX-CLT-057"`` → ``("FLX-CLT", 57)``; None when the text is not a stable ID."""
    m = ID_RE.fullmatch(stable_id.strip().upper()) if isinstance(stable_id, str) else None
    return (m[1], int(m[2])) if m else None


class IdAllocator:
    """Hands out IDs inside one write transaction (the caller holds the write lock); :meth:`flush` saves."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.last: dict[str, int] = {}
        self.dirty: set[str] = set()

    def _load(self, prefix: str) -> int:
        if prefix not in self.last:
            row = self.db.execute("SELECT last FROM id_sequences WHERE prefix = ?", [prefix]).fetchone()
            self.last[prefix] = row[0] if row else 0
        return self.last[prefix]

    def new(self, family: str | None, category: str) -> str:
        prefix = f"{family_code(family)}-{category}"
        n = self._load(prefix)
        while True:
            n += 1
            candidate = format_id(prefix, n)
            taken = self.db.execute("SELECT 1 FROM loras WHERE stable_id = ? UNION ALL "
                                    "SELECT 1 FROM known_ids WHERE stable_id = ?", [candidate, candidate]).fetchone()
            if not taken:
                break
        self.last[prefix] = n
        self.dirty.add(prefix)
        return candidate

    def note(self, stable_id: str) -> None:
        """Make sure the sequence of this ID's prefix never hands out its number (or a lower one) again."""
        parsed = parse_id(stable_id)
        if parsed:
            self.note_last(*parsed)

    def note_last(self, prefix: str, number: int) -> None:
        if number > self._load(prefix):
            self.last[prefix] = number
            self.dirty.add(prefix)

    def flush(self) -> None:
        if self.dirty:
            self.db["id_sequences"].upsert_all([{"prefix": p, "last": self.last[p]} for p in sorted(self.dirty)],
                                               pk="prefix")
            self.dirty.clear()


def claim_known(db: Database, *, root: str | None = None, rel_path: str | None = None,
                addnet: str | None = None) -> str | None:
    """Take an ID from ``known_ids`` (ledger/import) for this path or addnet hash; it leaves ``known_ids``."""
    if addnet:
        row = db.execute("SELECT stable_id FROM known_ids WHERE addnet = ? ORDER BY stable_id LIMIT 1",
                         [addnet]).fetchone()
    elif root is not None and rel_path is not None:
        row = db.execute("SELECT stable_id FROM known_ids WHERE root = ? AND rel_path = ? ORDER BY stable_id LIMIT 1",
                         [root, rel_path]).fetchone()
    else:
        return None
    if row is None:
        return None
    db.execute("DELETE FROM known_ids WHERE stable_id = ?", [row[0]])
    return row[0]


# ---- ledger ---------------------------------------------------------------------------------------------------
@dataclass
class LedgerEntry:
    id: str
    path: str  # relative to the root, "/"-separated
    addnet: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    missing: bool = False
    root: str | None = None  # only in exports (a ledger's root is the folder it sits in)


@dataclass
class Ledger:
    sequences: dict[str, int] = field(default_factory=dict)
    entries: list[LedgerEntry] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        ids = []
        for e in sorted(self.entries, key=lambda e: e.id):
            d: dict[str, Any] = {"id": e.id, "path": e.path, "addnet": e.addnet, "size": e.size,
                                 "mtime_ns": e.mtime_ns, "missing": e.missing}
            if e.root is not None:
                d["root"] = e.root
            ids.append(d)
        return {"format": LEDGER_FORMAT, "version": 1,
                "note": "Stable IDs of the LoRAs in this library, kept by lorawb; keep this file with the files.",
                "sequences": dict(sorted(self.sequences.items())), "ids": ids}


def parse_ledger(data: Any, source: str) -> Ledger:
    """Validate ledger/export JSON; raises :class:`UsageError` naming ``source`` when it is not one."""
    if not isinstance(data, dict) or data.get("format") != LEDGER_FORMAT or not isinstance(data.get("ids"), list):
        raise UsageError(f"{source}: not a lorawb ID ledger (expected {{\"format\": \"{LEDGER_FORMAT}\", \"ids\": "
                         "[…]}); export one with `lorawb ids export`.")
    seqs = {}
    for prefix, n in (data.get("sequences") or {}).items():
        if isinstance(prefix, str) and re.fullmatch(r"[A-Z0-9]{3}-[A-Z0-9]{3}", prefix) and isinstance(n, int):
            seqs[prefix] = n
    entries = []
    for raw in data["ids"]:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or parse_id(raw["id"]) is None:
            continue
        entries.append(LedgerEntry(
            id=raw["id"].upper(), path=str(raw.get("path") or ""), addnet=raw.get("addnet") or None,
            size=raw.get("size") if isinstance(raw.get("size"), int) else None,
            mtime_ns=raw.get("mtime_ns") if isinstance(raw.get("mtime_ns"), int) else None,
            missing=bool(raw.get("missing")), root=raw.get("root") if isinstance(raw.get("root"), str) else None))
    return Ledger(seqs, entries)


def read_ledger(root: str) -> Ledger | None:
    """The ledger in ``root``; None when there is none. A damaged one raises :class:`UsageError`."""
    p = Path(root) / LEDGER_NAME
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"{p}: cannot read the ID ledger ({exc.strerror}).") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{p}: the ID ledger is not valid JSON ({exc}); restore it from a backup or delete it.") \
            from None
    return parse_ledger(data, str(p))


def load_ledger(db: Database, root: str, ledger: Ledger, origin: str = "ledger") -> int:
    """Add a ledger's IDs that no row holds yet to ``known_ids`` (call inside a write transaction).

    Entries whose ID, path or addnet hash a row already has are left out: the database wins. Returns how many
    entries were added.
    """
    alloc = IdAllocator(db)
    for prefix, n in ledger.sequences.items():
        alloc.note_last(prefix, n)
    held_ids, held_paths, held_hashes = set(), set(), set()
    for sid, row_root, rel, addnet in db.execute("SELECT stable_id, root, rel_path, addnet FROM loras"):
        held_ids.add(sid)
        held_paths.add((row_root, rel))
        held_hashes.add(addnet)
    held_ids |= {r[0] for r in db.execute("SELECT stable_id FROM known_ids")}
    new = []
    for e in ledger.entries:
        alloc.note(e.id)
        entry_root = e.root if e.root is not None else root
        if e.id in held_ids or (entry_root, e.path) in held_paths or (e.addnet and e.addnet in held_hashes):
            continue
        held_ids.add(e.id)
        new.append({"stable_id": e.id, "addnet": e.addnet, "root": entry_root, "rel_path": e.path, "size": e.size,
                    "mtime_ns": e.mtime_ns, "origin": origin})
    if new:
        db["known_ids"].insert_all(new)
    added = len(new)
    alloc.flush()
    return added


def ledger_for(db: Database, root: str) -> Ledger:
    """The ledger of one root as the database sees it: its rows plus unbound known IDs under it."""
    entries = [LedgerEntry(id=r["stable_id"], path=r["rel_path"], addnet=r["addnet"], size=r["size"],
                           mtime_ns=r["mtime_ns"], missing=bool(r["missing"]))
               for r in db.query("SELECT stable_id, rel_path, addnet, size, mtime_ns, missing FROM loras "
                                 "WHERE root = ? AND stable_id IS NOT NULL", [root])]
    entries += [LedgerEntry(id=r["stable_id"], path=r["rel_path"] or "", addnet=r["addnet"], size=r["size"],
                            mtime_ns=r["mtime_ns"], missing=True)
                for r in db.query("SELECT * FROM known_ids WHERE root = ?", [root])]
    seqs = {r["prefix"]: r["last"] for r in db.query("SELECT prefix, last FROM id_sequences")}
    return Ledger(seqs, entries)


def write_ledger(root: str, ledger: Ledger) -> bool:
    """Write ``<root>/.lorawb-ids.json`` atomically; False when it was already up to date."""
    p = Path(root) / LEDGER_NAME
    text = json.dumps(ledger.to_json(), indent=1, ensure_ascii=False) + "\n"
    try:
        if p.read_text(encoding="utf-8") == text:
            return False
    except (OSError, ValueError):
        pass
    fd, tmp = tempfile.mkstemp(prefix=f".{LEDGER_NAME}.", suffix=".tmp", dir=root)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


# ---- export / import ------------------------------------------------------------------------------------------
def export_ids(db: Database) -> dict[str, Any]:
    """Every stable ID the database knows (rows and unbound known IDs), with root, path and addnet hash."""
    entries = [LedgerEntry(id=r["stable_id"], path=r["rel_path"] or r["path"], addnet=r["addnet"], size=r["size"],
                           mtime_ns=r["mtime_ns"], missing=bool(r["missing"]), root=r["root"] or "")
               for r in db.query("SELECT * FROM loras WHERE stable_id IS NOT NULL")]
    entries += [LedgerEntry(id=r["stable_id"], path=r["rel_path"] or "", addnet=r["addnet"], size=r["size"],
                            mtime_ns=r["mtime_ns"], missing=True, root=r["root"] or "")
                for r in db.query("SELECT * FROM known_ids")]
    seqs = {r["prefix"]: r["last"] for r in db.query("SELECT prefix, last FROM id_sequences")}
    return Ledger(seqs, entries).to_json()


@dataclass
class ImportResult:
    renamed: int = 0  # rows that took the imported ID (matched by addnet hash, else by path)
    stored: int = 0  # IDs kept for files not in the database yet
    unchanged: int = 0
    conflicts: list[str] = field(default_factory=list)


def import_ids(db: Database, data: Any, source: str = "import") -> ImportResult:
    """Apply exported IDs: a row with the same addnet hash (or, for never-hashed entries, the same root and path)
    takes the imported ID unless another row holds it; unmatched IDs wait in ``known_ids`` for their file."""
    from .db import immediate

    ledger = parse_ledger(data, source)
    result = ImportResult()
    with immediate(db):
        alloc = IdAllocator(db)
        for prefix, n in ledger.sequences.items():
            alloc.note_last(prefix, n)
        for e in ledger.entries:
            alloc.note(e.id)
            holder = db.execute("SELECT id, addnet FROM loras WHERE stable_id = ?", [e.id]).fetchone()
            if holder is not None:
                if e.addnet and holder[1] and holder[1] != e.addnet:
                    result.conflicts.append(f"{e.id}: already held by another file in this library")
                else:
                    result.unchanged += 1
                continue
            row = None
            if e.addnet:
                row = db.execute("SELECT id FROM loras WHERE addnet = ? ORDER BY missing, id LIMIT 1",
                                 [e.addnet]).fetchone()
            elif e.root is not None:
                row = db.execute("SELECT id FROM loras WHERE root = ? AND rel_path = ?", [e.root, e.path]).fetchone()
            if row is not None:
                db["loras"].update(row[0], {"stable_id": e.id})
                db.execute("DELETE FROM known_ids WHERE stable_id = ?", [e.id])
                result.renamed += 1
            elif db.execute("SELECT 1 FROM known_ids WHERE stable_id = ?", [e.id]).fetchone():
                result.unchanged += 1
            else:
                db["known_ids"].insert({"stable_id": e.id, "addnet": e.addnet, "root": e.root, "rel_path": e.path,
                                        "size": e.size, "mtime_ns": e.mtime_ns, "origin": source})
                result.stored += 1
        alloc.flush()
    return result

