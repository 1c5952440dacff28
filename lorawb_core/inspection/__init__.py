"""inspect_file: read a LoRA, tell what it is, and measure every block through the layout registry.

``report`` holds the dataclasses, ``formats`` the naming-convention rules, ``structure`` the header analysis (cached per
tensor index) and ``measure`` the tensor math (batched Grams, aggregation per block).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..hashes import hash_file
from .measure import aggregate_blocks, measure_blocks
from .report import (
    NO_MODULES,
    SCHEMA_VERSION,
    BlockStrength,
    LoraReport,
    ModuleReport,
    StructureSummary,
    broken_reason,
    check_applicable,
)
from .structure import Analysis, inspect_structure
from .summaries import summarize_structure

__all__ = ["NO_MODULES", "SCHEMA_VERSION", "Analysis", "BlockStrength", "LoraReport", "ModuleReport",
           "StructureSummary", "aggregate_blocks", "broken_reason", "check_applicable", "inspect_file",
           "inspect_structure", "measure_blocks", "summarize_structure"]


def inspect_file(path: str | os.PathLike[str], *, blocks: bool = True, hashes: bool = False, spectra: bool = True,
                 progress: Callable[[int, int], None] | None = None, check: bool = True) -> LoraReport:
    """Inspect one LoRA file.

    Args:
        path: a ``.safetensors`` file.
        blocks: read the tensors and measure per-module and per-block strength (else structure only).
        hashes: stream the whole file for SHA256 / AutoV2 / addnet (AutoV3) hashes.
        spectra: with ``blocks``, also the effective rank of every low-rank module.
        progress: ``(bytes_done, bytes_total)`` callback while hashing.
        check: raise :class:`BrokenLora` for a file that cannot be applied (else its problems are only listed in
            ``report.problems`` and on the modules).

    Raises:
        LorawbError subclasses for files that cannot be read at all, and :class:`BrokenLora` (``check``) for files
        that read but cannot be applied: shape mismatches, rank-0 factors and "no LoRA modules" from the header,
        NaN/Inf values with ``blocks``. ``exc.report`` holds the report.
    """
    analysis = inspect_structure(path)
    report = analysis.report
    if check:
        check_applicable(report)
    if blocks:
        measure_blocks(analysis, spectra=spectra)
        if check:
            check_applicable(report)
    if hashes:
        report.hashes = hash_file(Path(report.path), report.header_bytes, progress)
    return report

