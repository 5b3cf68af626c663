"""What every SQLite store (outbox, audit journal, revocation cache) shares: private
files, and one meaning for "the disk cannot take this write".

Files: :func:`open_private` creates a store's database ``0600`` before SQLite opens
it, and tightens an existing one (and its ``-wal``/``-shm``) to ``0600``. SQLite
creates its ``-wal`` and ``-shm`` files with the database file's own permissions, so
no process-wide umask is needed (a umask would race with the other threads that
write files meant to be readable, such as the sandbox's ``roots.pem``).

Connections: :class:`SqliteStore` opens a store in WAL mode. On a disk so full that
SQLite cannot create the ``-shm`` wal-index (a restart with the disk full), it opens
the file in exclusive locking mode, where SQLite keeps the wal-index in memory: the
daemon reads its outbox and comes up degraded instead of dying. Once a write has gone
through again, the store reconnects normally, so that the CLI and ``doctor`` can open
the file beside the daemon again.

Failures: a full disk, a file system remounted read-only or an I/O error reach the
stores as ``sqlite3.OperationalError`` (``SQLITE_FULL``, ``SQLITE_READONLY``,
``SQLITE_IOERR``...) or ``OSError`` (``ENOSPC``, ``EROFS``...). :func:`storage_error`
turns them into :class:`StorageUnavailable`, which the API answers
``503 storage_unavailable``; :class:`StoreHealth` remembers the last such failure so
that ``/v1/health`` can say degraded until a write succeeds again.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import StorageError

__all__ = [
    "LOW_DISK_BYTES",
    "DiskSpace",
    "SqliteStore",
    "StorageUnavailable",
    "StoreHealth",
    "WriteTransaction",
    "disk_space",
    "open_private",
    "storage_error",
]

log = logging.getLogger("sidecar.storage")

#: Free space under which the disk counts as short (or 5 % of a smaller file system).
LOW_DISK_BYTES = 100 * 1024 * 1024

_SQLITE_STORAGE_CODES = frozenset(
    {
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CANTOPEN,
    }
)
_OS_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO})


class StorageUnavailable(StorageError):
    """A store cannot write: the disk is full, read-only or failing. Nothing was changed."""

    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"the {store} cannot write: {reason}")
        self.store = store
        self.reason = reason


def _reason(exc: BaseException) -> str | None:
    """Why *exc* means the disk refused a write, in a few words; None if it does not."""
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None or code & 0xFF not in _SQLITE_STORAGE_CODES:
            return None
        return {
            sqlite3.SQLITE_FULL: "the disk is full",
            sqlite3.SQLITE_READONLY: "the file system is read-only",
        }.get(code & 0xFF, "the disk reported an I/O error")
    if isinstance(exc, OSError) and exc.errno in _OS_STORAGE_ERRNOS:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return "the disk is full"
        return "the file system is read-only" if exc.errno == errno.EROFS else "I/O error"
    return None


def storage_error(store: str, exc: BaseException) -> StorageUnavailable | None:
    """*exc* as a :class:`StorageUnavailable` of *store*, or None if it is another error."""
    reason = _reason(exc)
    return StorageUnavailable(store, reason) if reason is not None else None


def open_private(path: Path) -> None:
    """Make sure *path* (a SQLite database) and its WAL files are ``0600`` (POSIX).

    Called before ``sqlite3.connect``: a new database is created empty with mode 0600
    (SQLite accepts an empty file as a new database, and gives its ``-wal``/``-shm``
    the same mode); an existing one made by an older version is tightened.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if os.name != "posix":
        return  # Windows: the ACLs of the data directory decide
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        if exc.errno not in _OS_STORAGE_ERRNOS:
            raise
        return  # a read-only disk: SQLite opens what is there, and says so on write
    os.close(fd)
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno not in _OS_STORAGE_ERRNOS:
                raise


@dataclass(frozen=True)
class DiskSpace:
    free: int
    total: int

    @property
    def short(self) -> bool:
        return self.free < min(LOW_DISK_BYTES, self.total // 20)


def disk_space(path: Path) -> DiskSpace:
    usage = shutil.disk_usage(path)
    return DiskSpace(free=usage.free, total=usage.total)


class StoreHealth:
    """The last write failure of one store, cleared by the next write that succeeds."""

    def __init__(self, store: str) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._failure: StorageUnavailable | None = None
        self._since = 0.0
        #: Transactions that wrote, since the start.
        self.writes = 0

    def failed(self, exc: StorageUnavailable) -> None:
        with self._lock:
            if self._failure is None:
                self._since = time.time()
            self._failure = exc

    def wrote(self) -> None:
        with self._lock:
            self._failure = None
            self.writes += 1

    @property
    def failure(self) -> StorageUnavailable | None:
        with self._lock:
            return self._failure

    @property
    def failing_since(self) -> float | None:
        with self._lock:
            return self._since if self._failure is not None else None


class WriteTransaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` on a store's connection, under its lock.

    Any error rolls back. A full, read-only or failing disk is raised as
    :class:`StorageUnavailable` (nothing changed) and noted in *health*; a commit that
    changed rows clears it (an empty transaction writes nothing, so proves nothing).
    IMMEDIATE takes the write lock at once, so that a CLI or a second daemon on the same
    file waits instead of failing halfway through.
    """

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock, health: StoreHealth) -> None:
        self._db = db
        self._lock = lock
        self._health = health
        self._changes = 0

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._changes = self._db.total_changes
        except BaseException as exc:
            self._lock.release()
            self._raise_storage(exc)
            raise

    def __exit__(self, exc_type: object, exc: BaseException | None, _tb: object) -> None:
        try:
            if exc is not None:
                self._rollback()
                self._raise_storage(exc)
                return  # the original exception propagates
            wrote = self._db.total_changes != self._changes
            try:
                self._db.execute("COMMIT")
            except BaseException as commit_error:
                self._rollback()
                self._raise_storage(commit_error)
                raise
            if wrote:
                self._health.wrote()
        finally:
            self._lock.release()

    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                log.warning("%s: rollback failed", self._health.store, exc_info=True)

    def _raise_storage(self, exc: BaseException) -> None:
        unavailable = storage_error(self._health.store, exc)
        if unavailable is not None:
            self._health.failed(unavailable)
            raise unavailable from exc


class SqliteStore:
    """One store's SQLite connection (WAL), its lock and its health.

    Blocking; every use of :attr:`db` holds :attr:`lock` (writes through
    :meth:`transaction`)."""

    def __init__(
        self, path: Path, name: str, *, synchronous: str = "FULL", timeout: float = 5.0
    ) -> None:
        self.path = path
        self.health = StoreHealth(name)
        self.lock = threading.Lock()
        self._synchronous = synchronous
        self._timeout = timeout
        open_private(path)
        #: ``shared`` (normal), ``exclusive`` (no room for the -shm file) or ``read-only``.
        self.mode = "shared"
        self.db = self._connect()
        self._writes_at_open = self.health.writes

    def _connect(self) -> sqlite3.Connection:
        """Shared if the disk allows, else exclusive, else read-only (sets :attr:`mode`)."""
        attempts: tuple[tuple[str, Callable[[], sqlite3.Connection]], ...] = (
            ("shared", self._shared),
            # No room for the -shm file: exclusive mode keeps the wal-index in memory.
            ("exclusive", self._exclusive),
            # A read-only file system with no -shm file: only an immutable read works,
            # which is safe there (nobody can write); writes fail until a reconnect.
            ("read-only", self._read_only),
        )
        for mode, connect in attempts:
            try:
                db = connect()
            except sqlite3.Error as exc:
                unavailable = storage_error(self.health.store, exc)
                if unavailable is None or mode == "read-only":
                    raise unavailable or exc from exc
                self.health.failed(unavailable)
                continue
            if mode != "shared":
                log.warning(
                    "%s opened %s (the disk is full or read-only): the command line cannot "
                    "open it beside the daemon until the disk takes writes again",
                    self.health.store,
                    mode,
                )
            self.mode = mode
            return db
        raise AssertionError("unreachable")

    def _shared(self) -> sqlite3.Connection:
        return self._checked(self._open(self.path), "")

    def _exclusive(self) -> sqlite3.Connection:
        return self._checked(self._open(self.path), "PRAGMA locking_mode=EXCLUSIVE")

    def _read_only(self) -> sqlite3.Connection:
        db = self._open(f"file:{self.path}?mode=ro&immutable=1", uri=True)
        return self._checked(db, "", wal=False)

    def _checked(
        self, db: sqlite3.Connection, first: str, *, wal: bool = True
    ) -> sqlite3.Connection:
        try:
            if first:
                db.execute(first)
            if wal and db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            db.close()
            raise
        return db

    def _open(self, target: Path | str, *, uri: bool = False) -> sqlite3.Connection:
        return sqlite3.connect(
            target, isolation_level=None, check_same_thread=False, timeout=self._timeout, uri=uri
        )

    def transaction(self) -> WriteTransaction:
        """A write transaction (see :class:`WriteTransaction`).

        Opened exclusive on a full disk: shared again once a write went through. Opened
        read-only: every write first tries to reconnect, so that a file system
        remounted read-write is used without a restart."""
        if (self.mode == "exclusive" and self.health.writes > self._writes_at_open) or (
            self.mode == "read-only"
        ):
            self._reconnect()
        return WriteTransaction(self.db, self.lock, self.health)

    def _reconnect(self) -> None:
        with self.lock:
            before = self.mode
            # Closed first: an exclusive connection would keep the new one waiting for
            # its lock. _connect falls back as far as read-only, which a readable file
            # always allows.
            self.db.close()
            self.db = self._connect()
            self._writes_at_open = self.health.writes
        if self.mode != before:
            log.info("%s: the disk takes writes again (%s)", self.health.store, self.mode)

    def close(self) -> None:
        with self.lock:
            self.db.close()
