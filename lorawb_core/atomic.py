"""Files written whole or not at all: a temporary file beside the target, renamed over it once complete, removed on
any failure (a full disk, an exception while writing), so a reader never sees a partial file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "w", *, prefix: str | None = None,
                suffix: str = ".tmp") -> Iterator[IO[Any]]:
    """Open a temporary file in ``path``'s folder (created if missing) for writing in ``mode`` ("w": UTF-8 text,
    "wb": bytes); on a clean exit it replaces ``path``. No fsync: callers whose file must survive a power cut do
    their own (see organize.moves.write_atomic)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix or f".{target.name}.", suffix=suffix, dir=target.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
