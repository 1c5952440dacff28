"""The library's structure phase: a summary per tensor index, so a file whose index was seen before costs its header
read and its metadata, not a parse and an analysis of thousands of tensors.

Summaries are kept in this process (``_SUMMARIES``, bounded) and, during a scan with worker processes, shared
between the workers through a private directory of small JSON files (:func:`share_through`): an index the other
worker analysed is read back, not analysed again. Nothing in that directory is trusted beyond being a summary of
the digest it is named by: a file that does not parse is ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_file
from ..bounded_lru import BoundedLru
from ..family_detect import FamilyGuess, ModuleShape, detect_family
from ..header_index import remember_validated
from ..key_targets import RawPath
from ..metadata import parse_metadata
from ..reader import FileStructure, read_structure
from .report import StructureSummary
from .structure import IndexAnalysis, IndexFacts, analyse_index, index_facts, layout_ids

LayoutIds = tuple[str | None, str | None]


@dataclass
class IndexSummary:
    """What summarize_structure takes from a tensor index: a few hundred bytes, kept for far more indexes than the
    analyses cache holds (which keeps every module)."""

    facts: IndexFacts
    shape_guess: FamilyGuess | None
    some_shapes: tuple[ModuleShape, ...]  # the first module's shape or none: with the shape guess given,
    # detect_family reads only whether the index has a module
    layouts: dict[tuple[str, int | None], LayoutIds]  # by (family, depth), as in IndexAnalysis

    def to_json(self) -> dict[str, Any]:
        return {"facts": asdict(self.facts),
                "shape_guess": None if self.shape_guess is None else asdict(self.shape_guess),
                "some_shapes": [[m.raw.component, m.raw.path, m.raw.convention, m.out_features, m.in_features]
                                for m in self.some_shapes],
                "layouts": [[family, depth, *ids] for (family, depth), ids in self.layouts.items()]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IndexSummary:
        f = d["facts"]
        facts = IndexFacts(format=f["format"], algorithms=dict(f["algorithms"]), rank=f["rank"],
                           ranks=tuple(f["ranks"]), module_count=f["module_count"], needs_base=f["needs_base"],
                           problems=tuple(f["problems"]))
        guess = FamilyGuess(**d["shape_guess"]) if d["shape_guess"] is not None else None
        shapes = tuple(ModuleShape(RawPath(c, p, conv), o, i) for c, p, conv, o, i in d["some_shapes"])
        return cls(facts, guess, shapes, {(fam, depth): (lid, full) for fam, depth, lid, full in d["layouts"]})


# by index digest; at most 8,192 and 100,000 problem lines in all (a broken index has one per module)
_SUMMARIES = BoundedLru[bytes, IndexSummary](entries=8192, weight_limit=100_000,
                                             weight=lambda summary: len(summary.facts.problems))
_shared: Path | None = None  # the scan's directory of shared summaries (worker processes)


def share_through(directory: str | os.PathLike[str] | None) -> None:
    """Share this process's new summaries through ``directory`` and read the others' from it (None: stop)."""
    global _shared
    _shared = Path(directory) if directory else None


def _summary_of(digest: bytes) -> IndexSummary | None:
    summary = _SUMMARIES.get(digest)
    if summary is None and _shared is not None:
        summary = _adopt_shared(digest)
    return summary


def _remember(digest: bytes, summary: IndexSummary) -> None:
    _SUMMARIES.put(digest, summary)


def _adopt_shared(digest: bytes) -> IndexSummary | None:
    """The summary another worker left for ``digest``; its index is then known valid for files whose data ends
    where the shared one's did (the reader checks the size)."""
    assert _shared is not None
    try:
        d = json.loads((_shared / f"{digest.hex()}.json").read_bytes())
        summary, data_end = IndexSummary.from_json(d["summary"]), int(d["data_end"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    remember_validated(digest, data_end)
    _remember(digest, summary)
    return summary


def _share(structure: FileStructure, summary: IndexSummary) -> None:
    if _shared is None:
        return
    payload = {"summary": summary.to_json(), "data_end": structure.size - structure.header_bytes}
    try:
        with atomic_file(_shared / f"{structure.index_digest.hex()}.json", "w") as fh:
            json.dump(payload, fh)
    except OSError:  # sharing is an optimisation: the other worker analyses the index itself
        pass


def summarize_structure(path: str | os.PathLike[str]) -> StructureSummary:
    """The header facts the library's structure phase needs, without per-module work once the index is known:
    per file only the header read, the metadata and the family's metadata evidence (see StructureSummary).

    An index summarised before (by digest) whose header was validated before is not parsed again: the reader checks
    that the bytes around the metadata digest to it and that the file size fits it."""
    structure = read_structure(path, index_known=lambda digest: _summary_of(digest) is not None)
    known = _summary_of(structure.index_digest) if structure.index_digest else None  # (also when the reader
    # found the index in its own cache and handed its tensors back)
    if known is not None:
        family = detect_family(known.some_shapes, structure.metadata, shape_guess=known.shape_guess)
        ids = known.layouts.get((family.family, family.depth))
        if ids is not None:
            return _summary(structure, family, known.facts, ids)
    if not structure.tensors_read:  # a family this index was not mapped for yet (or the summary was just dropped)
        structure = read_structure(path)
    index = analyse_index(structure)
    family = detect_family(index.shapes, structure.metadata, shape_guess=index.shape_guess)
    facts = index_facts(index)
    ids = layout_ids(index, family)
    if known is not None:  # (a summary read from another worker has a layouts map of its own)
        known.layouts.setdefault((family.family, family.depth), ids)
    elif structure.index_digest:
        summary = _summary_from(index, facts)
        _remember(structure.index_digest, summary)
        _share(structure, summary)
    return _summary(structure, family, facts, ids)


def _summary_from(index: IndexAnalysis, facts: IndexFacts) -> IndexSummary:
    return IndexSummary(facts, index.shape_guess, tuple(index.shapes[:1]), index.layouts)


def _summary(structure: FileStructure, family: FamilyGuess, facts: IndexFacts, ids: LayoutIds) -> StructureSummary:
    meta = parse_metadata(structure.metadata)
    layout_id, full_layout_id = ids
    return StructureSummary(
        path=os.fsdecode(structure.path), size=structure.size, mtime_ns=structure.mtime_ns,
        header_bytes=structure.header_bytes, format=facts.format, family=family, layout_id=layout_id,
        full_layout_id=full_layout_id, algorithms=dict(facts.algorithms), rank=facts.rank,
        module_count=facts.module_count, metadata=meta, needs_base=facts.needs_base, problems=list(facts.problems))


def clear() -> None:
    _SUMMARIES.clear()
