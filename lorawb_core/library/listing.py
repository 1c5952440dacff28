"""Listing library roots: one ``stat`` per file, symlink loops cut, partial downloads left alone."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

LORA_SUFFIX = ".safetensors"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", ".aria2", ".!qb")


@dataclass(frozen=True)
class FileStat:
    path: str  # absolute
    root: str
    rel_path: str  # relative to root, "/"-separated
    size: int
    mtime_ns: int
    inode: int

    @property
    def signature(self) -> tuple[int, int, int]:
        return (self.size, self.mtime_ns, self.inode)


@dataclass
class RootListing:
    root: str
    available: bool
    files: dict[str, FileStat] = field(default_factory=dict)  # by absolute path
    partial: list[str] = field(default_factory=list)  # names of downloads in progress (.part, .crdownload, …)
    problems: list[str] = field(default_factory=list)  # folders that could not be read
    images: set[str] = field(default_factory=set)  # absolute paths of the image files (preview sidecars)


def normalise_roots(roots: list[str]) -> list[str]:
    """Absolute, de-duplicated roots; a root inside another given root is dropped (the outer walk covers it)."""
    out: list[str] = []
    for r in sorted({os.path.abspath(os.path.expanduser(r)) for r in roots}):
        if not any(r == o or r.startswith(o.rstrip(os.sep) + os.sep) for o in out):
            out.append(r)
    return out


def is_partial(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(PARTIAL_SUFFIXES) and LORA_SUFFIX in lower


def stat_file(path: str, root: str, rel_path: str) -> FileStat | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileStat(path, root, rel_path, st.st_size, st.st_mtime_ns, st.st_ino)


def list_root(root: str) -> RootListing:
    """Every ``*.safetensors`` file below ``root`` (following symlinks, each real folder once)."""
    try:
        st = os.stat(root)
    except OSError:
        return RootListing(root, available=False)
    if not os.path.isdir(root):
        return RootListing(root, available=False)
    listing = RootListing(root, available=True)
    seen = {(st.st_dev, st.st_ino)}
    stack = [(root, "")]
    while stack:
        folder, rel = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            listing.problems.append(f"{folder}: cannot list the folder ({exc.strerror})")
            continue
        for entry in entries:
            name = entry.name
            try:
                if entry.is_dir(follow_symlinks=True):
                    dst = entry.stat(follow_symlinks=True)
                    key = (dst.st_dev, dst.st_ino)
                    if key not in seen:  # symlink loops and repeated mounts are walked once
                        seen.add(key)
                        stack.append((entry.path, f"{rel}{name}/"))
                    continue
                if not name.lower().endswith(LORA_SUFFIX):
                    if name.lower().endswith(IMAGE_SUFFIXES):
                        listing.images.add(entry.path)
                    elif is_partial(name):
                        listing.partial.append(entry.path)
                    continue
                if not entry.is_file(follow_symlinks=True):
                    continue
                fst = entry.stat(follow_symlinks=True)
            except OSError:  # broken symlink, file removed meanwhile
                continue
            listing.files[entry.path] = FileStat(entry.path, root, rel + name, fst.st_size, fst.st_mtime_ns,
                                                 fst.st_ino)
    return listing


def settle(files: list[FileStat], *, window: float, wait: float) -> tuple[list[FileStat], list[FileStat]]:
    """Split files into (stable, still being written).

    Files modified within the last ``window`` seconds get a second look after ``wait`` seconds; those whose size
    or mtime moved in between are still being written and are left for a later scan.
    """
    now_ns = time.time_ns()
    recent = [f for f in files if now_ns - f.mtime_ns < window * 1e9]
    if not recent or wait <= 0:
        return files, []
    time.sleep(wait)
    moving: set[str] = set()
    for f in recent:
        again = stat_file(f.path, f.root, f.rel_path)
        if again is None or again.signature != f.signature:
            moving.add(f.path)
    return [f for f in files if f.path not in moving], [f for f in files if f.path in moving]
