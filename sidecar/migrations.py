"""Schema migrations for the SQLite stores (outbox, journal, revocation cache...).

Each store declares its schema as an ordered list of :class:`Migration` steps and
calls :func:`migrate` when it opens its database. The schema version is SQLite's
``PRAGMA user_version`` (0 for a new, empty database). Every step runs in its own
``BEGIN IMMEDIATE`` transaction together with the ``user_version`` bump, so a step
either happens completely or not at all: a crash or a failing step leaves the
database at the previous version, and the next start tries again. A database newer
than the code (a downgrade) is refused rather than touched.

Usage, in a store::

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
``PRAGMA foreign_keys`` out of the steps (they cannot change inside a transaction);
set them on the connection, before or after :func:`migrate`.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Misconfigured
from .storage import open_private

__all__ = [
    "Migration",
    "MigrationError",
    "MigrationResult",
    "migrate",
    "schema_version",
]

log = logging.getLogger("sidecar.migrations")

Step = str | Callable[[sqlite3.Connection], None]


@dataclass(frozen=True)
class Migration:
    """One schema step: after it, the database is at ``version``."""

    version: int
    description: str
    #: SQL statements (``;``-separated), or a function given the connection, inside
    #: the step's transaction (it must not commit).
    step: Step


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


def _check_steps(migrations: Sequence[Migration], store: str) -> None:
    expected = 1
    for migration in migrations:
        if migration.version != expected:
            raise MigrationError(
                f"{store}: migration steps must be numbered 1, 2, 3... in order "
                f"(found {migration.version} where {expected} was expected)"
            )
        expected += 1


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


def _apply(connection: sqlite3.Connection, migration: Migration) -> None:
    if callable(migration.step):
        migration.step(connection)
        return
    for statement in _statements(migration.step):
        connection.execute(statement)


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
    """Bring the database to the last step's version; returns what was done.

    *store* names the database in messages and logs. With *backup*, a database that
    holds an older schema (not a new one) is first copied to ``FILE.vN.bak``.
    Safe to call from several processes at once: the write lock is taken before the
    version is read again, so each step runs once.
    """
    _check_steps(migrations, store)
    target = len(migrations)
    start = schema_version(connection)
    if start > target:
        raise MigrationError(
            f"{store}: the database has schema version {start}, newer than this sidecar "
            f"knows ({target}); run the newer sidecar or restore the database from a backup"
        )
    if start == target:
        return MigrationResult(store, start, start)
    if connection.in_transaction:
        raise MigrationError(f"{store}: migrate() needs a connection with no open transaction")
    copy = _backup(connection, start, store) if backup and start > 0 else None
    applied: list[int] = []
    saved_isolation = connection.isolation_level
    connection.isolation_level = None  # explicit BEGIN/COMMIT below
    try:
        for migration in migrations[start:]:
            connection.execute("BEGIN IMMEDIATE")
            try:
                current = schema_version(connection)
                if current >= migration.version:  # another process got here first
                    connection.execute("COMMIT")
                    continue
                _apply(connection, migration)
                # user_version lives in the database header and is part of the transaction.
                connection.execute(f"PRAGMA user_version = {int(migration.version)}")
                connection.execute("COMMIT")
            except Exception as exc:
                connection.execute("ROLLBACK")
                raise MigrationError(
                    f"{store}: migration {migration.version} ({migration.description}) "
                    f"failed and was rolled back, the database stays at version "
                    f"{migration.version - 1}: {exc}"
                ) from exc
            applied.append(migration.version)
            log.info(
                "%s: schema migrated to version %d (%s)",
                store,
                migration.version,
                migration.description,
            )
    finally:
        connection.isolation_level = saved_isolation
    return MigrationResult(store, start, schema_version(connection), tuple(applied), copy)
