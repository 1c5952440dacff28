"""Opening the library database: WAL, a long busy timeout, foreign keys on, schema migrated.

Every write goes through :func:`immediate` (``BEGIN IMMEDIATE``): a writer takes the lock before it reads what
it will change, so concurrent scanners queue on the busy timeout instead of failing with "database is locked"
when a deferred transaction tries to upgrade.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlite_utils import Database

from ..errors import LibraryError
from .config import default_db_path

BUSY_TIMEOUT_S = 120.0


def utcnow() -> str:
    """Timestamps in the database: UTC ISO 8601 with seconds (sortable as text)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def connect(path: str | os.PathLike[str], *, busy_timeout: float = BUSY_TIMEOUT_S) -> Database:
    """A sqlite-utils ``Database`` on ``path`` with WAL, ``busy_timeout`` and ``foreign_keys`` set (no migration)."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(p), timeout=busy_timeout)
    except (OSError, sqlite3.Error) as exc:
        raise LibraryError(f"{p}: cannot open the library database ({exc}); check the path (LORAWB_DB) and its "
                           "permissions.") from None
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    db = Database(conn)
    deadline = time.monotonic() + busy_timeout
    while True:  # switching to WAL needs a moment alone with the file when it is brand new
        try:
            db.enable_wal()
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                conn.close()
                raise LibraryError(f"{p}: cannot switch the library database to WAL mode ({exc}).") from None
            time.sleep(0.05)
    db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
    db.execute("PRAGMA cache_size = -32000")  # 32 MB page cache
    db.execute("PRAGMA mmap_size = 268435456")  # read pages through a 256 MB map: no syscall per page
    return db


def open_library(path: str | os.PathLike[str] | None = None, *, busy_timeout: float = BUSY_TIMEOUT_S) -> Database:
    """Open (creating if needed) and migrate the library database; ``None`` means :func:`default_db_path`.

    The database is a context manager: ``with open_library(path) as db:`` closes it however the block ends."""
    from .migrations import migrate

    db = connect(path if path is not None else default_db_path(), busy_timeout=busy_timeout)
    try:
        migrate(db)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise LibraryError(f"cannot upgrade the library database ({exc}); move it aside and index again (stable IDs "
                           "are kept in the .lorawb-ids.json ledgers of the roots).") from None
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def immediate(db: Database) -> Iterator[Database]:
    """A write transaction that takes the database's write lock up front (``BEGIN IMMEDIATE``)."""
    if db.conn.in_transaction:  # nested use: join the outer transaction through a savepoint
        with db.atomic():
            yield db
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        db.rollback()
        raise
