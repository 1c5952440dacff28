"""Finishing A/B, XY and ablation batches: one labelled grid image (Pillow) with every cell also kept, and the
ablation report (per block, the mean absolute pixel difference from the all-blocks image).

Columns are the x values and rows the y values, in the spec's order; without a y axis and with many x values
(ablation) the cells wrap into rows of :data:`WRAP` columns. A cell that failed is drawn as a grey box with a cross
and its error. Cells are kept as ``<grid stem>_cells/<key>.png``; the grid, the cells and the report carry the job
spec in their PNG text (:mod:`.images`).
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .images import META_KEY, item_meta, keep_image, pil, save_png
from .work import BatchPlan, ItemResult, WorkItem

WRAP = 6
PAD = 8
FAILED_FILL = (64, 64, 64)
CROSS = (200, 40, 40)


@dataclass(frozen=True)
class CellOutcome:
    key: str
    label: str
    image: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "image": self.image, "error": self.error}


@dataclass
class GridOutcome:
    path: str
    cells: list[CellOutcome] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for c in self.cells if c.error)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "failed": self.failed, "cells": [c.to_dict() for c in self.cells]}


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", key).strip("_") or "cell"


def _layout(plan: BatchPlan) -> tuple[list[str], list[str], bool]:
    """(column values, row values, wrapped)."""
    x = (plan.spec.get("x") or {}).get("values") or [i.key for i in plan.items]
    y = (plan.spec.get("y") or {}) or {}
    ys = y.get("values") or []
    if not ys and len(x) > WRAP + 2:
        return x, [], True
    return x, ys, False


def _cell_image(result: ItemResult | None, size: tuple[int, int]):
    """The cell's picture (RGB) or None when it failed."""
    Image = pil()
    if result is None or result.error or not result.images:
        return None
    with Image.open(result.images[0]) as im:
        return im.convert("RGB").resize(size) if im.size != size else im.convert("RGB")


def _failed_cell(size: tuple[int, int], error: str, font):
    from PIL import ImageDraw

    Image = pil()
    im = Image.new("RGB", size, FAILED_FILL)
    d = ImageDraw.Draw(im)
    d.line([(0, 0), (size[0] - 1, size[1] - 1)], fill=CROSS, width=4)
    d.line([(0, size[1] - 1), (size[0] - 1, 0)], fill=CROSS, width=4)
    lines = textwrap.wrap("failed: " + error, width=max(10, size[0] // 8))[:8]
    d.multiline_text((PAD, PAD), "\n".join(lines), fill=(255, 255, 255), font=font)
    return im


def render_grid(plan: BatchPlan, results: list[ItemResult], out: str | Path, *, keep_cells: bool = True
                ) -> GridOutcome:
    """Draw the grid to ``out`` (PNG) and keep each cell beside it; failed cells are drawn as such."""
    Image = pil()
    from PIL import ImageDraw

    if not plan.items:
        raise UsageError(f"{plan.title}: the batch has no cells to draw.")
    out = Path(out)
    by_key = {r.key: r for r in results}
    first = next((r for r in results if r.images and not r.error), None)
    if first is not None:
        with Image.open(first.images[0]) as im:
            size = im.size
    else:
        size = (int(plan.items[0].params.get("width") or 256), int(plan.items[0].params.get("height") or 256))
    xs, ys, wrapped = _layout(plan)
    cols = min(WRAP, len(plan.items)) if wrapped else len(xs)
    rows = math.ceil(len(plan.items) / cols) if wrapped else max(1, len(ys))
    fs = max(12, size[1] // 24)
    font, title_font = _font(fs), _font(fs + 4)
    caption_h = fs + PAD * 2
    left = 0 if wrapped or not ys else max(int(font.getlength(str(v))) for v in ys) + PAD * 3
    top = (fs + 4) + PAD * 2 + (0 if wrapped else caption_h)
    x_name = (plan.spec.get("x") or {}).get("axis", "")
    y_name = (plan.spec.get("y") or {}).get("axis", "") if plan.spec.get("y") else ""
    heading = f"{plan.title}   (x: {x_name}" + (f", y: {y_name})" if y_name else ")")
    width = max(left + cols * (size[0] + PAD) + PAD, int(title_font.getlength(heading)) + 2 * PAD)
    height = top + rows * (size[1] + caption_h + PAD) + PAD
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    d.text((PAD, PAD), heading, fill=(0, 0, 0), font=title_font)
    if not wrapped:
        for c, v in enumerate(xs):
            d.text((left + c * (size[0] + PAD) + PAD, top - caption_h + PAD), _fit(str(v), size[0], font),
                   fill=(0, 0, 0), font=font)
        for r, v in enumerate(ys):
            d.text((PAD, top + r * (size[1] + caption_h + PAD) + size[1] // 2), str(v), fill=(0, 0, 0), font=font)
    outcome = GridOutcome(str(out))
    cells_dir = out.parent / f"{out.stem}_cells"
    for n, item in enumerate(plan.items):
        r, c = _position(item, n, xs, ys, cols, wrapped)
        result = by_key.get(item.key)
        picture = _cell_image(result, size)
        x0, y0 = left + c * (size[0] + PAD) + PAD, top + r * (size[1] + caption_h + PAD)
        kept = None
        if picture is None:
            error = (result.error if result else None) or "no image came back"
            sheet.paste(_failed_cell(size, error, font), (x0, y0))
            outcome.cells.append(CellOutcome(item.key, item.label, None, error))
        else:
            sheet.paste(picture, (x0, y0))
            if keep_cells:
                kept = str(keep_image(result.images[0], cells_dir / f"{_safe(item.key)}.png", item_meta(plan, item)))
            outcome.cells.append(CellOutcome(item.key, item.label, kept or str(result.images[0])))
        d.text((x0, y0 + size[1] + PAD // 2), _fit(item.label, size[0], font), fill=(0, 0, 0), font=font)
    meta = {META_KEY: json.dumps({"kind": plan.kind, "title": plan.title, "spec": plan.spec,
                                  "cells": [{"key": i.key, "label": i.label, "params": i.params} for i in plan.items]}),
            "lorawb_workflows": json.dumps({i.key: i.workflow for i in plan.items})}
    save_png(sheet, out, meta)
    return outcome


def _fit(text: str, width: int, font) -> str:
    """``text`` cut to fit ``width`` pixels (ending in ".." when cut): a caption never runs into the next cell."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "..") > width:
        text = text[:-1]
    return text + ".."


def _position(item: WorkItem, n: int, xs: list[str], ys: list[str], cols: int, wrapped: bool) -> tuple[int, int]:
    if wrapped:
        return divmod(n, cols)
    x, y = item.params.get("x"), item.params.get("y")
    c = xs.index(x) if x in xs else n % cols
    r = ys.index(y) if ys and y in ys else (n // cols if ys else 0)
    return r, c


# ---- ablation -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockScore:
    block: str
    score: float | None  # mean |pixel − reference pixel| over every pixel and RGB channel, on 0…255
    error: str | None = None


@dataclass
class AblationReport:
    title: str
    mode: str
    reference: str
    scores: list[BlockScore]

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "mode": self.mode, "reference": self.reference,
                "scores": [{"block": s.block, "score": s.score, "error": s.error} for s in self.scores]}

    def text(self) -> str:
        """A table, strongest effect first."""
        lines = [f"{self.title}: mean absolute pixel difference from the all-blocks image (0-255)",
                 f"{'block':<8} {'score':>8}"]
        ranked = sorted(self.scores, key=lambda s: (s.score is None, -(s.score or 0.0)))
        for s in ranked:
            lines.append(f"{s.block:<8} {s.score:>8.3f}" if s.score is not None else f"{s.block:<8} {'failed':>8}  "
                                                                                      f"{s.error}")
        return "\n".join(lines)


def mean_abs_difference(a, b) -> float:
    """Mean absolute difference of two same-size images over every pixel and RGB channel (0…255)."""
    from PIL import ImageChops, ImageStat

    if a.size != b.size:
        b = b.resize(a.size)
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    means = ImageStat.Stat(diff).mean
    return float(sum(means) / len(means))


def ablation_report(plan: BatchPlan, results: list[ItemResult]) -> AblationReport:
    """Per block of an ablation plan, how far its image moved from the all-blocks image."""
    from .planners import REFERENCE

    if plan.kind != "ablation":
        raise UsageError(f"{plan.title} is a {plan.kind} batch, not a block ablation.")
    by_key = {r.key: r for r in results}
    ref_result = by_key.get(REFERENCE)
    size = (int(plan.items[0].params.get("width") or 0), int(plan.items[0].params.get("height") or 0))
    reference = _cell_image(ref_result, size) if ref_result and ref_result.images else None
    scores = []
    for block in plan.spec.get("blocks") or []:
        result = by_key.get(block)
        if reference is None:
            why = (ref_result.error if ref_result else None) or "no image came back"
            scores.append(BlockScore(block, None, f"the all-blocks image failed ({why})"))
            continue
        picture = _cell_image(result, reference.size)
        if picture is None:
            scores.append(BlockScore(block, None, (result.error if result else None) or "no image came back"))
            continue
        scores.append(BlockScore(block, round(mean_abs_difference(reference, picture), 4)))
    return AblationReport(plan.title, str(plan.spec.get("mode", "mute")), REFERENCE, scores)


def write_report(report: AblationReport, path: str | Path) -> Path:
    """The report as JSON (atomic)."""
    from ..atomic import atomic_file

    with atomic_file(path) as fh:
        json.dump(report.to_dict(), fh, indent=2)
    return Path(path)
