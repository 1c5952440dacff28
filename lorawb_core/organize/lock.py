"""One organize at a time per library: an OS file lock beside the database (released by the OS when the process
ends, however it ends), holding who took it so a refusal can say so."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import OrganizeBusy
from ..library.db import utcnow


def _try_lock(fd: int) -> bool:
    if os.name == "nt":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


@contextmanager
def organize_lock(db_path: str, what: str) -> Iterator[None]:
    """Hold ``<database>.organize.lock`` for the block; :class:`OrganizeBusy` (with the holder) when taken."""
    path = f"{db_path}.organize.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}") if hasattr(os, "pread") else {}
            except ValueError:
                holder = {}
            raise OrganizeBusy(f"another organize is running (process {holder.get('pid', '?')}, {holder.get('what', '?')}"
                               f", since {holder.get('since', '?')}); wait for it to finish and run this again.")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "what": what, "since": utcnow()}).encode(), 0) \
            if hasattr(os, "pwrite") else None
        yield
    finally:
        os.close(fd)
