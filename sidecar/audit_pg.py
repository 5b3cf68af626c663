"""The audit journal in PostgreSQL: one hash chain that several daemons append to.

The same entries, hashes and checks as the SQLite journal (:mod:`sidecar.audit`), in
the database of the shared outbox (``[cns] outbox = "postgresql://…"``). Appends from
every daemon are serialized by a transaction-level advisory lock taken before the
head is read (:func:`chain_lock`), so the chain stays one line whoever writes; the
lock is released by the commit that writes the new head. Triggers refuse UPDATE,
DELETE and TRUNCATE of the entries (``sidecar audit verify`` is what catches someone
who drops them).

The outbox's events reach this journal in the same database and the same
transaction that removes them from the outbox (:meth:`PgOutbox.copy_events_to`), so
no position needs keeping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .audit import _FIELDS, _SOURCES, TABLES, AuditJournal, insert_entry
from .migrations import Migration
from .pgstore import PgStore, migrate

__all__ = ["PgAuditJournal", "chain_lock", "insert_chained"]

#: The advisory lock key of the chain's head (any constant, the same in every daemon).
_CHAIN_LOCK = 0x5A0D17

# The tables are the SQLite journal's (the same SQL); the triggers are PostgreSQL's.
_SCHEMA_V1 = (
    TABLES
    + _SOURCES
    + """;
CREATE INDEX entries_by_time ON entries (at);
CREATE FUNCTION sidecar_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'the audit journal is append-only'; END $$;
CREATE TRIGGER entries_no_change BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION sidecar_audit_append_only();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION sidecar_audit_append_only();
"""
)

_MIGRATIONS = (Migration(1, "entries, head, append-only triggers, sources", _SCHEMA_V1),)


def chain_lock(db: Any) -> None:
    """Hold the chain until the transaction ends (one appender at a time)."""
    db.execute("SELECT pg_advisory_xact_lock(?)", (_CHAIN_LOCK,))


def insert_chained(db: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """One entry at the head of the chain, inside a transaction on *db*."""
    chain_lock(db)
    return insert_entry(db, fields)


class PgAuditJournal(AuditJournal):
    """The journal in a PostgreSQL database (the shared outbox's)."""

    # seq is the primary key: the order of writing is the order of seq.
    _WRITTEN_ORDER = "seq"

    def __init__(self, url: str) -> None:
        # No file: the journal lives in the database (``path`` names it for messages).
        self.path = Path("postgresql")
        self._store = PgStore(url, "audit journal")
        self.health = self._store.health
        self._lock = self._store.lock
        migrate(self._store, "audit", _MIGRATIONS)
        self._start_executor()

    def _insert(self, fields: dict[str, Any]) -> dict[str, Any]:
        return insert_chained(self._db, fields)

    def _hold_chain(self) -> None:
        chain_lock(self._db)

    def _columns(self) -> list[str]:
        return [*_FIELDS, "hash"]
