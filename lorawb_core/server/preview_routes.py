"""The preview image route: ``GET /lorawb/loras/{stable_id}/preview[?size=N]`` (bound by :mod:`.routes`).

The image is the LoRA's sidecar preview as the library recorded it (scans find them, preview jobs write them). It is
served only from inside the library roots (the configured ones and the row's own root, symlinks resolved); ``size``
gives a thumbnail whose longer side is at most N pixels, made with Pillow once and cached under the database folder
(``thumbs/``, keyed by the image's path, mtime and size). No preview: 404 with the JSON error shape and the reason.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from aiohttp import web

from ..atomic import atomic_file
from .http import HttpError, q_int
from .library_routes import stable_id_of

THUMB_MIN, THUMB_MAX = 16, 2048
CACHE_HEADERS = {"Cache-Control": "private, max-age=60"}


class NoPreview(HttpError):
    """The LoRA has no preview image (or it is outside the library roots)."""

    status = 404


def _inside(path: str, roots: list[str]) -> bool:
    real = os.path.realpath(path)
    for root in roots:
        base = os.path.realpath(root)
        if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
            return True
    return False


def preview_file(db: Any, stable_id: str, roots: list[str]) -> str:
    """The preview's path for ``stable_id``, checked to exist and to lie inside the roots."""
    row = db.execute("SELECT preview, root, name FROM loras WHERE stable_id = ?", [stable_id]).fetchone()
    if row is None:
        raise NoPreview(f"No LoRA with stable ID {stable_id} in the library.", field="stable_id")
    preview, root, name = row
    if not preview:
        raise NoPreview(f"{stable_id} ({name}) has no preview image; generate one (lorawb previews {stable_id}) or put "
                        "<file name>.preview.png next to it and rescan.", field="stable_id")
    if not _inside(preview, [*roots, *([root] if root else [])]):
        raise NoPreview(f"The preview of {stable_id} is outside the library roots; it is not served.",
                        field="stable_id")
    if not os.path.isfile(preview):
        raise NoPreview(f"The preview of {stable_id} ({preview}) is gone; rescan the library.", field="stable_id")
    return preview


def thumbnail(path: str, size: int, cache_dir: Path) -> Path:
    """A copy of the image scaled so its longer side is at most ``size`` (cached; made atomically)."""
    from PIL import Image, features

    st = os.stat(path)
    fmt, ext = ("WEBP", ".webp") if features.check("webp") else ("PNG", ".png")
    key = hashlib.sha1(f"{path}\0{st.st_mtime_ns}\0{st.st_size}\0{size}".encode()).hexdigest()
    out = cache_dir / f"{key}{ext}"
    if out.is_file():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    with Image.open(path) as im:
        im.thumbnail((size, size))
        image = im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")
    with atomic_file(out, "wb", prefix=".thumb.", suffix=ext) as fh:
        image.save(fh, format=fmt)
    return out


class PreviewRoutes:
    """Serves preview images and thumbnails (needs ``self.service``, ``run_db`` and ``run`` of LibraryRoutes)."""

    async def get_preview(self, request: web.Request) -> web.StreamResponse:
        stable_id = stable_id_of(request)
        size = q_int(request, "size", 0, lo=0, hi=THUMB_MAX)
        if 0 < size < THUMB_MIN:
            size = THUMB_MIN
        path = await self.run_db(preview_file, stable_id, self.service.roots())
        if size:
            thumb = await self.run(thumbnail, path, size, self.service.db_dir / "thumbs")
            return web.FileResponse(thumb, headers={**CACHE_HEADERS, "Content-Type": _mime(thumb)})
        return web.FileResponse(path, headers={**CACHE_HEADERS, "Content-Type": _mime(path)})


MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


def _mime(path: str | os.PathLike[str]) -> str:
    return MIME.get(os.path.splitext(os.fspath(path))[1].lower(), "application/octet-stream")
