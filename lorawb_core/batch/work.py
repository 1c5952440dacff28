"""The contract between planning a batch and running it.

A planner (previews, A/B, XY, ablation) builds a :class:`BatchPlan`: the job spec as the user gave it plus one
:class:`WorkItem` per ComfyUI prompt. The queue stores the plan, runs every item on some server (choosing the
``prompt_id`` itself, so a restarted dispatcher finds an item already on a server instead of submitting it twice),
downloads the images of each item's output node and reports one :class:`ItemResult` per item. A finisher, chosen
by ``BatchPlan.kind``, turns the results into what the user asked for (a ``<stem>.preview.png`` sidecar, a labelled
grid, a per-block ablation report).

The queue treats ``workflow`` as opaque JSON; planners never talk to a server except to read ``/object_info``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

BatchKind = Literal["preview", "ab", "xy", "ablation"]


@dataclass(frozen=True)
class WorkItem:
    """One ComfyUI prompt of a batch."""

    key: str
    """Unique within its batch and stable across re-planning (``"x=0.5|y=OUTD"``, ``"SD1-CHR-001"``)."""
    workflow: dict[str, Any]
    """The API-format prompt (node id → ``{"class_type", "inputs", "_meta"}``), ready for ``POST /prompt``."""
    output_node: str
    """The id of the node whose images are this item's result (a ``SaveImage``)."""
    group: str = ""
    """What the server has to load for it (the checkpoint, or unet+clip+vae names): the queue runs the items of one
    group back to back on a server so it does not reload models between them."""
    label: str = ""
    """A short human label (a grid cell's caption, a toast)."""
    params: dict[str, Any] = field(default_factory=dict)
    """The settings this item stands for (stable_id, strength, weights, profile, seed, checkpoint, x/y values …):
    written into the PNG metadata and offered by the viewer's "copy settings"."""


@dataclass(frozen=True)
class BatchPlan:
    """What a job spec expands to: the items to run and how to finish them."""

    kind: BatchKind
    title: str
    spec: dict[str, Any]
    """The job spec as given (JSON-serialisable): stored with the batch and written into every PNG."""
    items: tuple[WorkItem, ...]


@dataclass(frozen=True)
class ItemResult:
    """What running one item gave: its downloaded images (in the output node's order) or the reason it failed."""

    key: str
    images: tuple[Path, ...] = ()
    error: str | None = None
    server: str | None = None
    prompt_id: str | None = None
