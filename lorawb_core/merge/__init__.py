"""Merge a stack of LoRAs into one new LoRA file with exact low-rank math (see :mod:`.lowrank` for the method).

>>> report = merge_loras(["SDX-CHR-001:0.8", "SDX-STY-004@OUTD"], "/loras/merged.safetensors",
...                      rule=RankRule(rank=32), db=db)            # doctest: +SKIP
>>> print(report.text())                                               # doctest: +SKIP

Importing this package does not import torch; the merge itself needs it.
"""

from __future__ import annotations

from .lowrank import DYNAMIC_METHODS, RankRule
from .plan import DORA_REASON, MergeInput
from .report import BlockMerge, MergeReport, ModuleMerge
from .run import merge_loras
from .writer import METADATA_MODES, OutputExists

__all__ = ["DORA_REASON", "DYNAMIC_METHODS", "METADATA_MODES", "BlockMerge", "MergeInput", "MergeReport",
           "ModuleMerge", "OutputExists", "RankRule", "merge_loras"]
