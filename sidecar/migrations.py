"""Schema migrations for every store: a list of numbered steps, and one runner.

Each store declares its schema as an ordered list of :class:`Migration` steps
(numbered 1, 2, 3...) and brings its database to the last one when it opens it. What
differs between databases — how the version is kept, how a step runs in one
transaction under the write lock — is the store's :class:`SchemaBackend`; what does
not — numbering, refusing a database newer than the code, one message per failure,
the log — is here, in :func:`run_migrations`.

SQLite (:func:`migrate`): the version is ``PRAGMA user_version`` (0 for a new, empty
database); each step runs in its own ``BEGIN IMMEDIATE`` transaction together with
the ``user_version`` bump, so a step either happens completely or not at all: a crash
or a failing step leaves the database at the previous version, and the next start
tries again. A database newer than the code (a downgrade) is refused rather than
touched.

Another database (PostgreSQL) supplies its own backend: ``read_version()`` (0 when
the version table is absent) and ``apply(migration)`` (in one transaction: take the
migration lock, read the version again, and if it is below ``migration.version`` run
the step and write ``migration.version``; roll back on any error), then calls
:func:`run_migrations`. An async driver calls :func:`pending` and, per step,
:func:`step_applied` / :func:`step_failed` around its own awaited transaction.

Usage, in a SQLite store::

    OUTBOX_MIGRATIONS = (
        Migration(1, "outbox table", '''
            CREATE TABLE outbox (uuid TEXT PRIMARY KEY, body BLOB NOT NULL);
        '''),
        Migration(2, "attempt counter", '''
            ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
        '''),
        Migration(3, "backfill", backfill_function),   # a callable(conn) for data work
    )

    connection = sqlite3.connect(path)
    migrate(connection, OUTBOX_MIGRATIONS, store="outbox")

Never edit a released step: add a new one. Keep ``PRAGMA journal_mode=WAL`` and
``PRAGMA foreign_keys`` out of SQLite steps (they cannot change inside a
transaction); set them on the connection, before or after :func:`migrate`.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import Misconfigured
from .storage import open_private

__all__ = [
    "Migration",
    "MigrationError",
    "MigrationResult",
    "SchemaBackend",
    "SqliteSchema",
    "migrate",
    "pending",
    "run_migrations",
    "schema_version",
    "step_applied",
    "step_failed",
]

log = logging.getLogger("sidecar.migrations")

#: SQL (run by the store's backend), or a function given the backend's connection.
Step = str | Callable[[Any], None]


@dataclass(frozen=True)
class Migration:
    """One schema step: after it, the database is at ``version``."""

    version: int
    description: str
    #: SQL statements (``;``-separated), or a function given the connection, inside
    #: the step's transaction (it must not commit).
    step: Step


class SchemaBackend(Protocol):
    """How one database keeps its schema version and runs a step."""

    def read_version(self) -> int:
        """The schema version now (0: a new, empty database)."""
        ...

    def apply(self, migration: Migration) -> bool:
        """Run *migration* in one transaction holding the write lock, and record its
        version; False (nothing done) when the version read under the lock is already
        there (another process got there first). Rolls back and raises on any error."""
        ...


@dataclass(frozen=True)
class MigrationResult:
    store: str
    from_version: int
    to_version: int
    applied: tuple[int, ...] = field(default=())
    #: The copy made before the first step, when asked for and when there was data.
    backup: Path | None = None


class MigrationError(Misconfigured):
    """A database that cannot be brought to the current schema; says which and why."""


def schema_version(connection: sqlite3.Connection) -> int:
    """The database's ``PRAGMA user_version``."""
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def pending(migrations: Sequence[Migration], current: int, *, store: str) -> Sequence[Migration]:
    """The steps still to run on a database at version *current*; MigrationError when the
    steps are not numbered 1, 2, 3... or the database is newer than the last step."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"{store}: migration steps must be numbered 1, 2, 3... in order "
                f"(found {migration.version} where {expected} was expected)"
            )
    if current > len(migrations):
        raise MigrationError(
            f"{store}: the database has schema version {current}, newer than this sidecar "
            f"knows ({len(migrations)}); run the newer sidecar or restore the database "
            "from a backup"
        )
    return migrations[current:]


def step_failed(store: str, migration: Migration, exc: BaseException) -> MigrationError:
    """The error for a step that failed (and was rolled back)."""
    return MigrationError(
        f"{store}: migration {migration.version} ({migration.description}) "
        f"failed and was rolled back, the database stays at version "
        f"{migration.version - 1}: {exc}"
    )


def step_applied(store: str, migration: Migration) -> None:
    log.info(
        "%s: schema migrated to version %d (%s)", store, migration.version, migration.description
    )


def run_migrations(
    backend: SchemaBackend, migrations: Sequence[Migration], *, store: str
) -> MigrationResult:
    """Bring *backend*'s database to the last step's version; returns what was done."""
    start = backend.read_version()
    applied: list[int] = []
    for migration in pending(migrations, start, store=store):
        try:
            ran = backend.apply(migration)
        except Exception as exc:
            raise step_failed(store, migration, exc) from exc
        if ran:
            applied.append(migration.version)
            step_applied(store, migration)
    return MigrationResult(store, start, backend.read_version(), tuple(applied))


def _statements(script: str) -> list[str]:
    """Split a script into statements (``executescript`` would commit on its own)."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip().strip(";").strip():
                statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement: {pending.strip()[:60]!r}")
    return statements


class SqliteSchema:
    """:class:`SchemaBackend` of a SQLite connection: ``PRAGMA user_version``, and each
    step in a ``BEGIN IMMEDIATE`` transaction (the connection must be in autocommit)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def read_version(self) -> int:
        return schema_version(self.connection)

    def apply(self, migration: Migration) -> bool:
        connection = self.connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(connection) >= migration.version:  # another process got here
                connection.execute("COMMIT")
                return False
            if callable(migration.step):
                migration.step(connection)
            else:
                for statement in _statements(migration.step):
                    connection.execute(statement)
            # user_version lives in the database header and is part of the transaction.
            connection.execute(f"PRAGMA user_version = {int(migration.version)}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return True


def _backup(connection: sqlite3.Connection, version: int, store: str) -> Path | None:
    row = connection.execute("PRAGMA database_list").fetchone()
    main_file = row[2] if row else ""
    if not main_file:  # in-memory database
        return None
    target = Path(f"{main_file}.v{version}.bak")
    open_private(target)  # a copy of the store holds what the store holds
    with sqlite3.connect(target) as copy:
        connection.backup(copy)
    copy.close()
    log.info("%s: copied the version %d database to %s before migrating", store, version, target)
    return target


def migrate(
    connection: sqlite3.Connection,
    migrations: Sequence[Migration],
    *,
    store: str,
    backup: bool = False,
) -> MigrationResult:
    """Bring a SQLite database to the last step's version; returns what was done.

    *store* names the database in messages and logs. With *backup*, a database that
    holds an older schema (not a new one) is first copied to ``FILE.vN.bak``.
    Safe to call from several processes at once: the write lock is taken before the
    version is read again, so each step runs once.
    """
    start = schema_version(connection)
    if not pending(migrations, start, store=store):
        return MigrationResult(store, start, start)
    if connection.in_transaction:
        raise MigrationError(f"{store}: migrate() needs a connection with no open transaction")
    copy = _backup(connection, start, store) if backup and start > 0 else None
    saved_isolation = connection.isolation_level
    connection.isolation_level = None  # explicit BEGIN/COMMIT in SqliteSchema.apply
    try:
        result = run_migrations(SqliteSchema(connection), migrations, store=store)
    finally:
        connection.isolation_level = saved_isolation
    return MigrationResult(store, start, result.to_version, result.applied, copy)
