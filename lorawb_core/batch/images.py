"""Writing the batch's PNGs: text metadata (the workflow and the job spec) and atomic saves; preview sidecars.

Every PNG lorawb writes keeps the text chunks of the image ComfyUI produced (its ``prompt`` chunk: the API workflow
that made it) and adds ``lorawb``: JSON ``{"kind", "title", "key", "params", "spec"}``. A file is written to a
temporary name in its folder and renamed into place, so a full disk or a crash leaves no partial file; a preview
sidecar (``<stem>.preview.png`` next to the LoRA) is never put over an existing file unless ``force``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LorawbError, UsageError
from .work import BatchPlan, ItemResult, WorkItem

META_KEY = "lorawb"


def pil():
    """Pillow's ``Image`` module, or a clear error when Pillow is not installed."""
    try:
        from PIL import Image
    except ImportError:
        raise UsageError("Pillow is needed to write previews and grids: pip install pillow") from None
    return Image


def text_chunks(path: str | os.PathLike[str]) -> dict[str, str]:
    """The text chunks of an image file (ComfyUI's ``prompt`` and ``workflow`` …); {} when it has none."""
    with pil().open(path) as im:
        return {k: v for k, v in (getattr(im, "text", None) or {}).items() if isinstance(v, str)}


def item_meta(plan: BatchPlan, item: WorkItem) -> dict[str, str]:
    """The text chunks for one item's image: ``prompt`` (its API workflow) and ``lorawb`` (job spec + params)."""
    return {"prompt": json.dumps(item.workflow), META_KEY: json.dumps(
        {"kind": plan.kind, "title": plan.title, "key": item.key, "params": item.params, "spec": plan.spec})}


def save_png(image, path: str | os.PathLike[str], text: dict[str, str], *, overwrite: bool = True) -> Path:
    """Save ``image`` as PNG with ``text`` chunks, atomically; with ``overwrite=False`` an existing file wins
    (:class:`FileExistsError`)."""
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value) if not value.isascii() else info.add_text(key, value)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG", pnginfo=info)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _link_new(tmp: str, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists (a hard link fails if it does: no race with another writer;
    on a filesystem without hard links, an existence check then a rename)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:
        if path.exists():
            raise FileExistsError(str(path)) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def keep_image(src: str | os.PathLike[str], dest: str | os.PathLike[str], extra: dict[str, str], *,
               overwrite: bool = True) -> Path:
    """Copy a generated image to ``dest`` as PNG, keeping its text chunks and adding ``extra`` (which wins)."""
    Image = pil()
    with Image.open(src) as im:
        im.load()
        chunks = {k: v for k, v in (getattr(im, "text", None) or {}).items() if isinstance(v, str)}
        image = im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")
    return save_png(image, dest, {**chunks, **extra}, overwrite=overwrite)


@dataclass(frozen=True)
class PreviewOutcome:
    stable_id: str
    path: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"stable_id": self.stable_id, "path": self.path, "error": self.error}


def finish_previews(plan: BatchPlan, results: list[ItemResult], *, force: bool | None = None) -> list[PreviewOutcome]:
    """Write each item's first image as ``<stem>.preview.png`` next to its LoRA (``params["sidecar"]``).

    An existing preview is kept unless ``force`` (default: the plan's ``spec["force"]``); a failed item, an item
    without an image or a write error is reported for that LoRA and the others go on.
    """
    force = bool(plan.spec.get("force")) if force is None else force
    by_key = {r.key: r for r in results}
    out = []
    for item in plan.items:
        sid = item.params.get("stable_id", item.key)
        result = by_key.get(item.key)
        if result is None or result.error or not result.images:
            why = (result.error if result else None) or "the job returned no image"
            out.append(PreviewOutcome(sid, error=f"{sid}: no preview written ({why})."))
            continue
        dest = item.params["sidecar"]
        if not os.path.isdir(os.path.dirname(dest)):
            out.append(PreviewOutcome(sid, error=f"{sid}: the LoRA's folder {os.path.dirname(dest)} is gone; rescan "
                                                 "and queue it again."))
            continue
        try:
            keep_image(result.images[0], dest, item_meta(plan, item), overwrite=force)
        except FileExistsError:
            out.append(PreviewOutcome(sid, error=f"{sid}: {dest} exists and was kept; use --force to replace it."))
            continue
        except (OSError, LorawbError) as exc:
            out.append(PreviewOutcome(sid, error=f"{sid}: cannot write {dest} ({exc}); nothing was written."))
            continue
        out.append(PreviewOutcome(sid, path=dest))
    return out
