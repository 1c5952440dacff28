"""The test a drop file must pass: the real reader (header, tensors when PyTorch is there, hashes), a detected and
allowed family, and no byte-for-byte or tensor-content twin in the library (or earlier in the same drop)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlite_utils import Database

from ..errors import LorawbError
from ..families import FAMILIES, UNKNOWN, title_of
from ..torch_check import torch_available

COMPATIBLE = "compatible"
INCOMPATIBLE = "incompatible"
DUPLICATE = "duplicate"


@dataclass
class Verdict:
    """What the test says about one drop file; ``reason`` is a sentence for the user when it is not compatible."""

    path: str
    verdict: str
    reason: str = ""
    name: str = ""  # title / output name / file stem: what the slug comes from
    family: str = UNKNOWN
    variant: str | None = None
    layout: str | None = None
    trigger_words: list[str] = field(default_factory=list)
    sha256: str | None = None
    addnet: str | None = None
    size: int = 0
    mtime_ns: int = 0
    duplicate_of: str | None = None  # stable ID or path of the twin
    stable_id: str | None = None  # the file's own ID when the library holds it
    category: str | None = None

    @property
    def ok(self) -> bool:
        return self.verdict == COMPATIBLE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def allowed_families(setting: list[str] | None) -> set[str]:
    """``organize.families``: the codes given, or every family lorawb can apply."""
    return set(setting) if setting else set(FAMILIES)


def _name_of(report, path: str) -> str:
    meta = report.metadata
    stem = os.path.splitext(os.path.basename(path))[0]
    return (meta.title or meta.output_name or stem).strip() or stem


def _library_twin(db: Database, path: str, sha256: str, addnet: str) -> tuple[str, str] | None:
    row = db.execute("SELECT stable_id, path, sha256 = ? FROM loras WHERE missing = 0 AND path != ? AND "
                     "(sha256 = ? OR addnet = ?) ORDER BY sha256 = ? DESC, id LIMIT 1",
                     [sha256, path, sha256, addnet, sha256]).fetchone()
    if row is None:
        return None
    kind = "byte-for-byte" if row[2] else "tensor-content (same weights, other metadata)"
    return row[0] or row[1], kind


def test_file(path: str, db: Database | None, families: set[str], seen: dict[str, str]) -> Verdict:
    """Test one file. ``seen`` maps the addnet and sha256 hashes of files already passed in this drop to their
    paths (a second identical drop file is a duplicate of the first)."""
    from ..inspection import inspect_file

    st = os.stat(path)
    base = Verdict(path=path, verdict=INCOMPATIBLE, name=os.path.splitext(os.path.basename(path))[0],
                   size=st.st_size, mtime_ns=st.st_mtime_ns)
    if db is not None:
        row = db.execute("SELECT stable_id, category FROM loras WHERE path = ?", [path]).fetchone()
        if row is not None:
            base.stable_id, base.category = row
    try:
        report = inspect_file(path, blocks=torch_available(), hashes=True, spectra=False)
    except LorawbError as exc:
        base.reason = str(exc)
        broken = getattr(exc, "report", None)
        if broken is not None and broken.hashes is None:
            from ..hashes import hash_file

            broken.hashes = hash_file(path, broken.header_bytes)
        if broken is not None:
            base.sha256, base.addnet = broken.hashes.sha256, broken.hashes.addnet
        else:
            from .moves import sha256_of

            base.sha256 = sha256_of(path)
        return base
    base.name = _name_of(report, path)
    base.family, base.variant = report.family.family, report.family.variant
    base.layout, base.trigger_words = report.layout_id, report.trigger_words
    base.sha256, base.addnet = report.hashes.sha256, report.hashes.addnet
    if base.family == UNKNOWN:
        base.reason = f"family not detected ({report.family.reason or 'no evidence'}); lorawb cannot tell which " \
                      "model it is for."
        return base
    if base.family not in families:
        base.reason = (f"family {title_of(base.family)} is not in organize.families "
                       f"({', '.join(sorted(families))}); add it there to organize such files.")
        return base
    twin = _library_twin(db, path, base.sha256, base.addnet) if db is not None else None
    if twin is not None:
        base.verdict, base.duplicate_of = DUPLICATE, twin[0]
        base.reason = f"a {twin[1]} duplicate of {twin[0]}, already in the library."
        return base
    for key in (base.sha256, base.addnet):
        if key in seen:
            base.verdict, base.duplicate_of = DUPLICATE, seen[key]
            base.reason = f"a duplicate of {os.path.basename(seen[key])} in the same drop folder."
            return base
    seen[base.sha256] = seen[base.addnet] = path
    base.verdict = COMPATIBLE
    return base
