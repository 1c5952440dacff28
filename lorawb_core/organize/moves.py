"""Moving one file without ever losing or overwriting it.

Within a filesystem: ``rename()`` after checking the target is free (the plan already picked a free name).
Across filesystems: copy into ``<target>.lorawb-part`` while hashing, ``fsync``, compare the hash with the source's,
rename the part into place, ``fsync`` the folder, and only then remove the source. Modification times are kept.

``LORAWB_ORGANIZE_CRASH_AT=N`` (tests only) kills the process with SIGKILL at the N-th crash point, so the crash
tests can stop a real run between any two of these steps.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import time
from dataclasses import dataclass

from ..errors import OrganizeError

PART_SUFFIX = ".lorawb-part"
CHUNK = 1 << 20


@dataclass
class IoTimes:
    """Seconds spent in fsync and in hashing (the benchmark reports their share)."""

    fsync: float = 0.0
    hash: float = 0.0


TIMES = IoTimes()
_crash = {"count": 0}


def crash_point() -> None:
    """Count a crash point; SIGKILL this process at the one ``LORAWB_ORGANIZE_CRASH_AT`` names."""
    at = os.environ.get("LORAWB_ORGANIZE_CRASH_AT")
    if not at:
        return
    _crash["count"] += 1
    if _crash["count"] == int(at):
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(path: str) -> None:
    if os.name == "nt":
        return
    started = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
        TIMES.fsync += time.perf_counter() - started


def sha256_of(path: str) -> str:
    started = time.perf_counter()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    TIMES.hash += time.perf_counter() - started
    return h.hexdigest()


def same_filesystem(src: str, dst_dir: str) -> bool:
    return os.stat(src).st_dev == os.stat(dst_dir).st_dev


def _copy_verified(src: str, dst: str, sha256: str | None) -> None:
    part = dst + PART_SUFFIX
    st = os.stat(src)
    h = hashlib.sha256()
    try:
        with open(src, "rb") as fin, open(part, "xb") as fout:
            while chunk := fin.read(CHUNK):
                started = time.perf_counter()
                h.update(chunk)
                TIMES.hash += time.perf_counter() - started
                fout.write(chunk)
            fout.flush()
            started = time.perf_counter()
            os.fsync(fout.fileno())
            TIMES.fsync += time.perf_counter() - started
        crash_point()
        expected = sha256 or sha256_of(src)
        if h.hexdigest() != expected or sha256_of(part) != expected:
            raise OrganizeError(f"{src}: the copy at {dst} does not match the source (hash differs); the source is "
                                "kept and the copy removed. Check the destination drive.")
        os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns))
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "target exists", dst)
        os.rename(part, dst)
    except BaseException:
        if os.path.lexists(part):
            os.unlink(part)
        raise
    fsync_dir(os.path.dirname(dst))
    crash_point()
    os.unlink(src)
    fsync_dir(os.path.dirname(src) or ".")


def move_file(src: str, dst: str, sha256: str | None = None) -> None:
    """Move ``src`` to ``dst`` (which must not exist); see the module docstring. Raises :class:`OrganizeError`
    with what to do when the target is taken, the folder is read-only or the disk is full (the source stays)."""
    if os.path.lexists(dst):
        raise OrganizeError(f"{dst} already exists: lorawb never overwrites a file; run organize again (it picks a "
                            "free name).")
    try:
        if same_filesystem(src, os.path.dirname(dst)):
            os.rename(src, dst)  # durable at the caller's fsync_dir of the folder (once per LoRA and its sidecars)
            crash_point()
        else:
            _copy_verified(src, dst, sha256)
    except OrganizeError:
        raise
    except OSError as exc:
        what = {errno.ENOSPC: "the disk is full", errno.EROFS: "the destination is read-only",
                errno.EACCES: "permission denied", errno.EPERM: "permission denied"}.get(exc.errno, exc.strerror)
        raise OrganizeError(f"cannot move {src} to {dst}: {what}. The file stays at {src}; free space or fix the "
                            "permissions and run organize again.") from None


def write_atomic(path: str, data: bytes, *, exclusive: bool = False, durable: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync (``durable``), rename. ``exclusive``: fail if
    ``path`` exists."""
    tmp = f"{path}.lorawb-tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                started = time.perf_counter()
                os.fsync(fh.fileno())
                TIMES.fsync += time.perf_counter() - started
        if exclusive and os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "target exists", path)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
