"""One store's PostgreSQL connection, its lock, its health and its schema version.

The PostgreSQL twin of :class:`~sidecar.storage.SqliteStore`, for the stores several
daemons share (``[cns] outbox = "postgresql://…"``: the outbox and the audit journal).
The same surface: :attr:`PgStore.db` (whose ``execute`` takes the SQLite-style ``?``
placeholders, so that a store's SQL is written once), :attr:`PgStore.lock`,
:attr:`PgStore.health` and :meth:`PgStore.transaction`. Blocking (psycopg 3's sync
API): the stores call it from their own thread, as they do SQLite.

A server that cannot be reached, a lost connection or a full disk on the server raise
:class:`~sidecar.storage.StorageUnavailable` (nothing changed; answered 503), and the
next use reconnects.

Schema versions (:func:`migrate`): a ``schema_version`` table holds each component's
version; migrations run in one transaction under an advisory lock, so that daemons
started together migrate once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from .config import is_database_url
from .migrations import Migration, run_migrations
from .storage import StorageUnavailable, StoreHealth

__all__ = ["PgConnection", "PgSchema", "PgStore", "is_database_url", "migrate"]

log = logging.getLogger("sidecar.pgstore")

#: The advisory lock key of schema migrations (any constant, the same in every daemon).
_MIGRATION_LOCK = 0x51DECA7


class PgConnection:
    """A psycopg connection whose ``execute`` takes ``?`` placeholders (as sqlite3)."""

    def __init__(self, conn: psycopg.Connection[Any], store: str) -> None:
        self.conn = conn
        self._store = store

    def execute(self, sql: str, args: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        try:
            return self.conn.execute(sql.replace("?", "%s"), tuple(args))
        except psycopg.OperationalError as exc:
            raise _unavailable(self._store, exc) from exc

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> psycopg.Cursor[Any]:
        cursor = self.conn.cursor()
        try:
            cursor.executemany(sql.replace("?", "%s"), rows)
        except psycopg.OperationalError as exc:
            raise _unavailable(self._store, exc) from exc
        return cursor


def _unavailable(store: str, exc: BaseException) -> StorageUnavailable:
    """The failure in words fit for ``/v1/health`` (which anyone may read: no server
    address); libpq's own words go to the log (the first line: never a password)."""
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    log.warning("%s: PostgreSQL: %s", store, detail)
    if isinstance(exc, psycopg.errors.DiskFull):
        return StorageUnavailable(store, "the PostgreSQL server's disk is full")
    return StorageUnavailable(store, "the PostgreSQL server cannot be reached")


class PgStore:
    """One store's connection to PostgreSQL; every use of :attr:`db` holds :attr:`lock`."""

    def __init__(self, url: str, name: str, *, connect_timeout: float = 10.0) -> None:
        self.url = url
        self.health = StoreHealth(name)
        self.lock = threading.Lock()
        self._connect_timeout = connect_timeout
        self._conn: PgConnection | None = None
        with self.lock:
            self._connection()

    def _connection(self) -> PgConnection:
        if self._conn is not None and not (self._conn.conn.closed or self._conn.conn.broken):
            return self._conn
        try:
            conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(1, round(self._connect_timeout)),
                application_name="sidecar",
            )
        except psycopg.OperationalError as exc:
            unavailable = _unavailable(self.health.store, exc)
            self.health.failed(unavailable)
            raise unavailable from exc
        self._conn = PgConnection(conn, self.health.store)
        return self._conn

    @property
    def db(self) -> PgConnection:
        """The connection (reconnected if it was lost); hold :attr:`lock`."""
        return self._connection()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A transaction under :attr:`lock`: committed on success, else rolled back.

        Connection loss or a server out of disk: :class:`StorageUnavailable`, noted in
        :attr:`health`."""
        with self.lock:
            try:
                conn = self._connection().conn
                with conn.transaction():
                    yield
            except StorageUnavailable as exc:
                self.health.failed(exc)
                raise
            except (psycopg.OperationalError, psycopg.errors.DiskFull) as exc:
                unavailable = _unavailable(self.health.store, exc)
                self.health.failed(unavailable)
                raise unavailable from exc
            self.health.wrote()

    def close(self) -> None:
        with self.lock:
            if self._conn is not None:
                self._conn.conn.close()
                self._conn = None


class PgSchema:
    """:class:`~sidecar.migrations.SchemaBackend` of one component's tables in a
    PostgreSQL database: its version in ``schema_version`` (one row per component), each
    step in one transaction under an advisory lock, so that daemons starting together
    run it once."""

    def __init__(self, store: PgStore, component: str) -> None:
        self.store = store
        self.component = component

    def read_version(self) -> int:
        with self.store.transaction():
            db = self.store.db
            found = db.execute("SELECT to_regclass('schema_version')").fetchone()
            if found is None or found[0] is None:
                return 0
            row = db.execute(
                "SELECT version FROM schema_version WHERE component = ?", (self.component,)
            ).fetchone()
        return int(row[0]) if row else 0

    def apply(self, migration: Migration) -> bool:
        with self.store.transaction():
            db = self.store.db
            db.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
            row = db.execute(
                "SELECT version FROM schema_version WHERE component = ?", (self.component,)
            ).fetchone()
            if row and row[0] >= migration.version:  # another daemon got here first
                return False
            if callable(migration.step):
                migration.step(db)
            else:
                db.conn.execute(migration.step)  # DDL, no parameters
            db.execute(
                "INSERT INTO schema_version (component, version) VALUES (?, ?) "
                "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (self.component, migration.version),
            )
        return True


def migrate(store: PgStore, component: str, migrations: Sequence[Migration]) -> int:
    """Bring *component*'s schema to the last of *migrations* (the steps of
    :mod:`sidecar.migrations`, as every store has them); returns the version."""
    return run_migrations(PgSchema(store, component), migrations, store=component).to_version
