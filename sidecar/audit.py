"""The audit journal: an append-only, hash-chained record of signatures and deliveries.

Each entry holds the SHA-256 of the previous entry (``prev_hash``) and its own hash
over every field, the sequence number and ``prev_hash`` included. Changing a field
breaks that entry's hash; removing or reordering entries breaks the chain (a gap in
``seq`` or a ``prev_hash`` that is not the previous hash); removing the newest entries
is caught by the ``head`` row, written in the same transaction as each entry. Triggers
refuse UPDATE and DELETE so that nothing in the daemon can rewrite history by mistake;
they do not stop someone with the file and the sqlite3 shell, which is what
:func:`AuditJournal.verify` is for (a journal that must also resist its own
administrator needs its head hash published elsewhere — out of scope here).

SQLite in WAL mode with ``synchronous=FULL``: an entry that :meth:`append` returned
is on disk. Writes are serialized by a lock; :meth:`append_async` runs them off the
event loop on the journal's own thread.

Entries about the CNS outbox are not appended by whoever changed the outbox: the outbox
writes each state change's event in the same transaction as the change, and
:meth:`AuditJournal.import_events` copies them here, each exactly once: the journal
keeps, per source, the last event it holds (``sources``), in the transaction that
appends them. A crash between the outbox commit and the copy only delays the entry to
the next copy (at the latest, the next start).

A full or read-only disk raises :class:`~sidecar.storage.StorageUnavailable`.

The journal follows the outbox's store (:func:`sidecar.stores.open_journal`): this class is the
SQLite one; :class:`~sidecar.audit_pg.PgAuditJournal` keeps one chain in the
PostgreSQL database several daemons share, with the same entries and the same checks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .migrations import Migration, MigrationError, migrate
from .storage import SqliteStore, storage_error

if TYPE_CHECKING:
    from .pgstore import PgStore

__all__ = [
    "AUDIT_FILE",
    "GENESIS_HASH",
    "AuditEntry",
    "AuditJournal",
    "AuditProblem",
    "SourceEvent",
    "VerifyReport",
]

#: The SQLite journal's file name, in the data directory.
AUDIT_FILE = "audit.sqlite3"

log = logging.getLogger("sidecar.audit")

#: ``prev_hash`` of the first entry.
GENESIS_HASH = "0" * 64

#: The tables, in SQL both SQLite and PostgreSQL take (:mod:`sidecar.audit_pg`).
TABLES = """
CREATE TABLE IF NOT EXISTS entries (
    seq       INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    client    TEXT NOT NULL,
    operation TEXT NOT NULL,
    uuid      TEXT NOT NULL,
    digest    TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    level     TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
"""

_SCHEMA = (
    TABLES
    + """
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'the audit journal is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'the audit journal is append-only'); END;
"""
)

#: Per source of imported events, the last one the journal holds.
_SOURCES = "CREATE TABLE IF NOT EXISTS sources (name TEXT PRIMARY KEY, seq INTEGER NOT NULL)"
_MIGRATIONS = (
    Migration(1, "entries, head, append-only triggers", _SCHEMA),
    Migration(2, "sources of imported events", _SOURCES + ";"),
)

_FIELDS = (
    "seq",
    "at",
    "client",
    "operation",
    "uuid",
    "digest",
    "key_id",
    "level",
    "outcome",
    "detail",
    "prev_hash",
)


@dataclass(frozen=True)
class AuditEntry:
    """One journal record. Empty strings stand for "does not apply"."""

    seq: int
    at: str
    client: str
    operation: str
    uuid: str
    digest: str
    key_id: str
    level: str
    outcome: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def entry_hash(values: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of the fields (``detail`` as stored text)."""
    material = json.dumps(
        {name: values[name] for name in _FIELDS},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AuditProblem:
    seq: int
    problem: str

    def __str__(self) -> str:
        return f"entry {self.seq}: {self.problem}"


@dataclass(frozen=True)
class VerifyReport:
    entries: int
    problems: list[AuditProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class SourceEvent(Protocol):
    """An event another store recorded for the journal (e.g. an outbox state change)."""

    @property
    def seq(self) -> int: ...
    @property
    def at(self) -> float: ...
    @property
    def operation(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def client(self) -> str: ...
    @property
    def uuid(self) -> str: ...
    @property
    def digest(self) -> str: ...
    @property
    def level(self) -> str: ...
    @property
    def detail(self) -> dict[str, Any]: ...


def event_fields(event: SourceEvent) -> dict[str, Any]:
    """The journal fields of an event another store recorded."""
    return {
        "at": datetime.fromtimestamp(event.at, UTC).isoformat(timespec="microseconds"),
        "client": event.client,
        "operation": event.operation,
        "uuid": event.uuid,
        "digest": event.digest,
        "key_id": "",
        "level": event.level,
        "outcome": event.outcome,
        "detail": event.detail,
    }


def insert_entry(db: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """One chained entry, inside a transaction on *db* (``?`` placeholders); its values."""
    row = db.execute("SELECT seq, hash FROM head WHERE id = 1").fetchone()
    seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS_HASH)
    values: dict[str, Any] = {
        "seq": seq,
        **fields,
        "detail": json.dumps(fields["detail"] or {}, sort_keys=True, ensure_ascii=False),
        "prev_hash": prev,
    }
    values["hash"] = entry_hash(values)
    db.execute(
        f"INSERT INTO entries ({', '.join(values)}) "  # noqa: S608 - fixed names
        f"VALUES ({', '.join('?' * len(values))})",
        tuple(values.values()),
    )
    db.execute(
        "INSERT INTO head (id, seq, hash) VALUES (1, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        (seq, values["hash"]),
    )
    return values


class AuditJournal:
    """The journal in one SQLite file."""

    #: The order :meth:`verify` reads entries in: as written, whatever their ``seq``.
    _WRITTEN_ORDER = "rowid"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._store: SqliteStore | PgStore = SqliteStore(path, "audit journal", synchronous="FULL")
        #: The last write failure (full or read-only disk), for ``/v1/health``.
        self.health = self._store.health
        self._lock = self._store.lock
        # Nothing is written to a journal already at the current schema version, so
        # that a daemon restarted on a full disk still opens it. (One whose step cannot
        # be written now gets ``sources`` with the first import that can write.)
        try:
            migrate(self._db, _MIGRATIONS, store="audit journal")
        except MigrationError as exc:
            if storage_error(self.health.store, exc.__cause__ or exc) is None:
                raise
            log.warning("audit journal: schema update waits for a disk that takes writes")
        self._start_executor()

    def _start_executor(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="audit")

    @property
    def _db(self) -> Any:
        return self._store.db

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._store.close()

    def append(
        self,
        operation: str,
        outcome: str,
        *,
        client: str = "",
        uuid: str = "",
        digest: str = "",
        key_id: str = "",
        level: str = "",
        detail: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Record one event; durable when this returns."""
        fields = {
            "at": _now(),
            "client": client,
            "operation": operation,
            "uuid": uuid,
            "digest": digest,
            "key_id": key_id,
            "level": level,
            "outcome": outcome,
            "detail": detail,
        }
        with self._transaction():
            return _entry(self._insert(fields))

    def import_events(
        self, source: str, fetch: Callable[[int], Sequence[SourceEvent]]
    ) -> tuple[int, int]:
        """Append the events ``fetch(after)`` gives past the last one held from *source*.

        One transaction: the entries and the new position are committed together, so
        each event is journaled exactly once, whoever (daemon, CLI) imports and however
        a process ends. Returns ``(entries added, last event seq held)``."""
        with self._transaction():
            self._hold_chain()  # before reading the position: one importer at a time
            self._db.execute(_SOURCES)
            row = self._db.execute("SELECT seq FROM sources WHERE name = ?", (source,)).fetchone()
            last = row[0] if row else 0
            events = fetch(last)
            for event in events:
                self._insert(event_fields(event))
                last = max(last, event.seq)
            if events:
                self._db.execute(
                    "INSERT INTO sources (name, seq) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                    (source, last),
                )
        return len(events), last

    def probe(self) -> None:
        """A real write that adds no entry, to learn whether the disk takes writes again."""
        with self._transaction():
            self._db.execute(_SOURCES)
            self._db.execute(
                "INSERT INTO sources (name, seq) VALUES ('probe', 1) "
                "ON CONFLICT (name) DO UPDATE SET seq = sources.seq + 1"
            )

    def _transaction(self) -> AbstractContextManager[None]:
        return self._store.transaction()

    def _insert(self, fields: dict[str, Any]) -> dict[str, Any]:
        """One chained entry, inside a transaction; its stored values."""
        return insert_entry(self._db, fields)

    def _hold_chain(self) -> None:
        """Inside a transaction: no other writer until it ends (SQLite's BEGIN
        IMMEDIATE already made it so)."""

    async def append_async(self, operation: str, outcome: str, **fields: Any) -> AuditEntry:
        """:meth:`append` on the journal's thread, so the fsync never blocks the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, lambda: self.append(operation, outcome, **fields)
        )

    def entries(self, *, since: str | None = None) -> Iterator[AuditEntry]:
        """Entries in order; *since*: only those at or after this RFC 3339 time (UTC)."""
        query = "SELECT * FROM entries"
        args: tuple[Any, ...] = ()
        if since:
            query += " WHERE at >= ?"
            args = (_normalize_time(since),)
        with self._lock:
            names = self._columns()
            rows = self._db.execute(query + " ORDER BY seq", args).fetchall()
        for row in rows:
            yield _entry(dict(zip(names, row, strict=True)))

    def _columns(self) -> list[str]:
        return [c[1] for c in self._db.execute("PRAGMA table_info(entries)").fetchall()]

    def verify(self) -> VerifyReport:
        """Walk the chain; every changed, removed or reordered entry is named."""
        with self._lock:
            names = self._columns()
            rows = self._db.execute(
                f"SELECT * FROM entries ORDER BY {self._WRITTEN_ORDER}"  # noqa: S608
            ).fetchall()
            head = self._db.execute("SELECT seq, hash FROM head WHERE id = 1").fetchone()
        problems: list[AuditProblem] = []
        prev_hash, prev_seq = GENESIS_HASH, 0
        for row in rows:
            values = dict(zip(names, row, strict=True))
            seq = values["seq"]
            if seq != prev_seq + 1:
                if seq > prev_seq + 1:
                    missing = f"{prev_seq + 1}" + (f"-{seq - 1}" if seq - 1 > prev_seq + 1 else "")
                    problems.append(AuditProblem(seq, f"entries {missing} removed before it"))
                else:
                    problems.append(AuditProblem(seq, f"out of order (after entry {prev_seq})"))
            if entry_hash(values) != values["hash"]:
                problems.append(AuditProblem(seq, "content changed (hash does not match)"))
            elif values["prev_hash"] != prev_hash:
                problems.append(
                    AuditProblem(seq, "chain broken (prev_hash is not the previous entry's hash)")
                )
            prev_hash, prev_seq = values["hash"], seq
        if head is None:
            if rows:
                problems.append(AuditProblem(prev_seq, "head record missing"))
        elif head[0] != prev_seq or head[1] != prev_hash:
            problems.append(
                AuditProblem(
                    head[0], f"newest entries removed (head is {head[0]}, last is {prev_seq})"
                )
            )
        return VerifyReport(len(rows), problems)


def _entry(values: dict[str, Any]) -> AuditEntry:
    data = dict(values)
    data["detail"] = json.loads(data["detail"]) if isinstance(data["detail"], str) else {}
    return AuditEntry(**data)


def _normalize_time(value: str) -> str:
    """An RFC 3339 time as the journal writes it (UTC, microseconds), for comparison."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
