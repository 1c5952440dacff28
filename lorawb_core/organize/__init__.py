"""Organize: a drop folder becomes tested, foldered, configured and indexed LoRAs — journaled and undoable.

``verdict`` tests a file (real reader, family, duplicates), ``plan`` decides every target (``slugs`` names
folders), ``moves`` moves one file safely, ``journal`` records each step in the library database before it acts
and recovers interrupted runs, ``files`` writes ``config.yaml`` / ``index.json`` / ``preview_config.json``,
``run`` ties them together, ``undo`` and ``reconcile`` are the other two commands, ``lock`` keeps them one at a
time, ``config_sync`` reads hand edits of ``config.yaml`` back into the library.
"""

from __future__ import annotations

from .plan import Plan, PlanItem, PlannedMove
from .reconcile import Finding, ReconcileReport, reconcile
from .run import OrganizeOptions, OrganizeResult, organize
from .undo import UndoResult, undo
from .verdict import Verdict

__all__ = ["Finding", "OrganizeOptions", "OrganizeResult", "Plan", "PlanItem", "PlannedMove", "ReconcileReport",
           "UndoResult", "Verdict", "organize", "reconcile", "undo"]
