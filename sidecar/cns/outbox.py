"""The durable outbox: every CNS message the daemon accepted, until the CNS has answered.

One SQLite file in WAL mode with ``synchronous=FULL``: when :meth:`Outbox.enqueue_deposit`
returns, the message is in the write-ahead log on disk, so ``202 Accepted`` may be
answered — a crash or a power cut after that loses nothing.

A message's life::

    awaiting_timestamp ─▶ queued ─▶ sending ─▶ delivered | rejected | failed | unknown
                            ▲          │                                       │
                            └──────────┘  5xx, timeout, connection error:      │
                                          retried later                        │
              delivered | rejected | failed ◀── the CNS's status lookup ◀──────┘

``unknown``: the retry budget is spent, the last answer was lost (the CNS may have
booked it) and the CNS could not be asked. Not final: the worker asks the CNS again
until it says; never to be resubmitted under a new UUID meanwhile.

Its UUID is its identity here and the CNS's idempotency key there: re-sending a
message after a crash, with the same UUID, cannot make the CNS book it twice.

A deposit is identified by the fee note's UUID. A cancellation is a message of its own
(a fresh v4 UUID, its idempotency key) whose ``subject`` is the fee note's UUID; it is
claimed only once its deposit has a final state, so it never overtakes it. There is at
most one cancellation per fee note.

All database work runs on the outbox's single thread (:meth:`Outbox.run`): writes are
serialized, so two concurrent posts of the same UUID make exactly one row.

Every state change writes its audit event into the ``events`` table in the same
transaction (a transactional outbox for the journal): a state with no event cannot
exist, whenever the process dies. :mod:`sidecar.cns.journal_feed` copies the events
into the audit journal, exactly once, and prunes what the journal holds.

Each message belongs to the client that deposited it (``client``); a cancellation
belongs to its fee note's owner. :meth:`Outbox.get`, :meth:`Outbox.list` and
:meth:`Outbox.enqueue_cancel` take an ``owner`` (None: an admin, who sees all).

A full or read-only disk: writes raise :class:`~sidecar.storage.StorageUnavailable`
and change nothing, except the outcome of a delivery the CNS has answered: that one is
kept in memory and recorded at the next claim that can write (the worker's poll), so
the answer is never lost while the process lives (after a crash, the message is sent
again with the same UUID, which the CNS deduplicates).

Two stores behind one interface (:func:`sidecar.stores.open_outbox`, by ``[cns] outbox``): this
class is the interface and the SQLite store (one daemon, embedded, the default);
:class:`~sidecar.cns.outbox_pg.PgOutbox` the PostgreSQL one that several daemons
share. Their SQL is written once (``?`` placeholders either way); a store overrides
the few hooks where they differ: how due messages are claimed (:meth:`_claimable`,
:meth:`_mark_sending`), what is recovered at start (:meth:`_recover`), which
deliveries are this process's (:meth:`_mine`), and how the events reach the journal
(:meth:`copy_events_to`).
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import functools
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..errors import NotFound, Refused
from ..migrations import Migration, migrate
from ..storage import SqliteStore, StorageUnavailable, StoreHealth

if TYPE_CHECKING:
    from ..audit import AuditJournal
    from ..pgstore import PgStore

__all__ = [
    "FINAL",
    "DuplicateUuid",
    "InvalidState",
    "Message",
    "Operation",
    "Outbox",
    "OutboxEvent",
    "Status",
    "UnknownMessage",
]

T = TypeVar("T")


log = logging.getLogger("sidecar.cns.outbox")


class Status(StrEnum):
    AWAITING_TIMESTAMP = "awaiting_timestamp"
    QUEUED = "queued"
    SENDING = "sending"
    DELIVERED = "delivered"
    REJECTED = "rejected"
    FAILED = "failed"
    UNKNOWN = "unknown"


FINAL = frozenset({Status.DELIVERED, Status.REJECTED, Status.FAILED})


class Operation(StrEnum):
    DEPOSIT = "deposit"
    CANCEL = "cancel"


class DuplicateUuid(Refused):
    """This UUID was already accepted with different content."""

    def __init__(self, existing: Message) -> None:
        super().__init__(f"message {existing.id} already accepted with different content")
        self.existing = existing


class UnknownMessage(NotFound):
    """No message with this UUID."""


class InvalidState(Refused):
    """The message is not in a state that allows this."""

    def __init__(self, message: Message, detail: str) -> None:
        super().__init__(detail)
        self.message = message


_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS messages (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    operation       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    client          TEXT NOT NULL,
    digest          TEXT NOT NULL,
    level           TEXT NOT NULL DEFAULT '',
    body            BLOB,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    delivered_at    REAL,
    last_error      TEXT NOT NULL DEFAULT '',
    answer_status   INTEGER,
    answer_type     TEXT NOT NULL DEFAULT '',
    answer_body     BLOB,
    reasons         TEXT NOT NULL DEFAULT '[]'
);
CREATE UNIQUE INDEX IF NOT EXISTS one_cancel_per_note
    ON messages (subject) WHERE operation = 'cancel';
CREATE INDEX IF NOT EXISTS by_status ON messages (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS by_update ON messages (updated_at);
"""

# Version 2: owners, the journal's events, the store's identity.
# ``client`` existed from the start (the deposit's client), so every existing row already
# has its owner; a cancellation made by another client (before ownership) is given to
# its fee note's owner, the one who may now see it.
_SCHEMA_V2 = """
UPDATE messages SET client = (
    SELECT d.client FROM messages d WHERE d.id = messages.subject AND d.operation = 'deposit')
WHERE operation = 'cancel' AND EXISTS (
    SELECT 1 FROM messages d WHERE d.id = messages.subject AND d.operation = 'deposit');
CREATE INDEX by_owner ON messages (client, seq);
CREATE TABLE events (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        REAL NOT NULL,
    operation TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    client    TEXT NOT NULL,
    uuid      TEXT NOT NULL,
    digest    TEXT NOT NULL,
    level     TEXT NOT NULL,
    detail    TEXT NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(16))));
INSERT INTO meta (key, value) VALUES ('probe', '0');
"""

# Version 3: the body last in the row. A signed fee note (its PDF/A embedded) is tens of
# KB, stored on overflow pages that SQLite walks one by one to reach any column after
# it: with the body in the middle, reading a message's status walked all its pages
# (a page of 100 messages: ~2,000 page reads, most of a list's CPU). Last, it is read
# only when asked for. Same columns, same rows, same sequence, same indexes.
_SCHEMA_V3 = """
CREATE TABLE messages_v3 (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    operation       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    client          TEXT NOT NULL,
    digest          TEXT NOT NULL,
    level           TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    delivered_at    REAL,
    last_error      TEXT NOT NULL DEFAULT '',
    answer_status   INTEGER,
    answer_type     TEXT NOT NULL DEFAULT '',
    answer_body     BLOB,
    reasons         TEXT NOT NULL DEFAULT '[]',
    body            BLOB
);
INSERT INTO messages_v3 (seq, id, operation, subject, client, digest, level, status,
    attempts, created_at, updated_at, next_attempt_at, delivered_at, last_error,
    answer_status, answer_type, answer_body, reasons, body)
SELECT seq, id, operation, subject, client, digest, level, status, attempts, created_at,
    updated_at, next_attempt_at, delivered_at, last_error, answer_status, answer_type,
    answer_body, reasons, body FROM messages ORDER BY seq;
DELETE FROM sqlite_sequence WHERE name = 'messages_v3';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'messages_v3', seq FROM sqlite_sequence WHERE name = 'messages';
DROP TABLE messages;
ALTER TABLE messages_v3 RENAME TO messages;
CREATE UNIQUE INDEX one_cancel_per_note ON messages (subject) WHERE operation = 'cancel';
CREATE INDEX by_status ON messages (status, next_attempt_at);
CREATE INDEX by_update ON messages (updated_at);
CREATE INDEX by_owner ON messages (client, seq);
"""

_MIGRATIONS = (
    Migration(1, "messages", _SCHEMA_V1),
    Migration(2, "owners, journal events, store id", _SCHEMA_V2),
    Migration(3, "the body last in the row", _SCHEMA_V3),
)

_COLUMNS = (
    "seq, id, operation, subject, client, digest, level, status, attempts, created_at, "
    "updated_at, next_attempt_at, delivered_at, last_error, answer_status, answer_type, "
    "answer_body, reasons"
)


class Db(Protocol):
    """What a store's SQL runs on: sqlite3's connection, or
    :class:`~sidecar.pgstore.PgConnection`."""

    def execute(self, sql: str, args: Sequence[Any] = ..., /) -> Any: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Any: ...


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return _iso_of(moment)


@functools.lru_cache(maxsize=4096)
def _iso_of(moment: float) -> str:
    """RFC 3339 in milliseconds. Cached: a message's times rarely change, and a page of
    messages read again and again (a client polling the list) formats the same ones."""
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Message:
    """One outbox row (without its body unless asked for)."""

    seq: int
    id: str
    operation: Operation
    subject: str
    client: str
    digest: str
    level: str
    status: Status
    attempts: int
    created_at: float
    updated_at: float
    next_attempt_at: float
    delivered_at: float | None
    last_error: str
    answer_status: int | None
    answer_type: str
    answer_body: bytes | None
    reasons: list[dict[str, str]] = field(default_factory=list)
    body: bytes | None = None

    def as_json(self) -> dict[str, Any]:
        """The public view (API.md ``GET /v1/cns/messages/{uuid}``)."""
        answer = None
        if self.answer_status is not None:
            text = (self.answer_body or b"").decode("utf-8", errors="replace")
            answer = {"status": self.answer_status, "content_type": self.answer_type, "body": text}
        entry: dict[str, Any] = {
            "uuid": self.id,
            "operation": self.operation.value,
            "fee_note_uuid": self.subject,
            "status": self.status.value,
            "attempts": self.attempts,
            "client": self.client,
            "digest": self.digest,
            "created": _iso(self.created_at),
            "updated": _iso(self.updated_at),
            "delivered": _iso(self.delivered_at),
            "next_attempt": _iso(self.next_attempt_at) if self.status == Status.QUEUED else None,
            "last_error": self.last_error or None,
            "reasons": self.reasons,
            "answer": answer,
        }
        if self.level:
            entry["level"] = self.level
        return entry


@dataclass(frozen=True)
class OutboxEvent:
    """The audit journal entry of one state change, written with it."""

    seq: int
    at: float
    operation: str
    outcome: str
    client: str
    uuid: str
    digest: str
    level: str
    detail: dict[str, Any]


def _message(row: tuple[Any, ...], body: bytes | None = None) -> Message:
    (
        seq,
        id_,
        operation,
        subject,
        client,
        digest,
        level,
        status,
        attempts,
        created_at,
        updated_at,
        next_attempt_at,
        delivered_at,
        last_error,
        answer_status,
        answer_type,
        answer_body,
        reasons,
    ) = row
    return Message(
        seq=seq,
        id=id_,
        operation=_OPERATIONS.get(operation) or Operation(operation),
        subject=subject,
        client=client,
        digest=digest,
        level=level,
        status=_STATUSES.get(status) or Status(status),
        attempts=attempts,
        created_at=created_at,
        updated_at=updated_at,
        next_attempt_at=next_attempt_at,
        delivered_at=delivered_at,
        last_error=last_error,
        answer_status=answer_status,
        answer_type=answer_type,
        answer_body=answer_body,
        reasons=[] if reasons == "[]" else json.loads(reasons),
        body=body,
    )


# A row's text → its member, without the enum's call machinery (a page is 100 rows);
# an unknown value still goes through the call, which raises as before.
_STATUSES: dict[str, Status] = {s.value: s for s in Status}
_OPERATIONS: dict[str, Operation] = {o.value: o for o in Operation}


class Outbox:
    """The outbox database. Methods are blocking; call them through :meth:`run`."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        # FULL: the WAL is fsynced at every commit, which is what makes 202 mean durable.
        self._store: SqliteStore | PgStore = SqliteStore(
            path, "outbox", synchronous="FULL", timeout=30
        )
        migrate(self._store.db, _MIGRATIONS, store="outbox", backup=True)
        self._opened(self._store.health, clock)
        if self._store.mode == "shared":
            self._open_reader(path)

    def _opened(self, health: StoreHealth, clock: Callable[[], float]) -> None:
        """The state every store has, once its schema is there."""
        self._clock = clock
        #: The last write failure (full or read-only disk, lost server), for ``/v1/health``.
        self.health = health
        self._write_lock = self._store.lock
        #: Set on the reading thread only (:meth:`_become_reader`): which connection it uses.
        self._on_reader = threading.local()
        (self.store_id,) = self._db.execute(
            "SELECT value FROM meta WHERE key = 'store_id'"
        ).fetchone()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="outbox")
        #: Outcomes the CNS gave that the disk could not take yet: uuid → finish() arguments.
        self._unrecorded: dict[str, dict[str, Any]] = {}
        #: A recovery (rows left ``sending``) the disk refused at start: done at the next claim.
        self._recovery_due = False
        #: Called (on the loop) after a :meth:`run` that wrote journal events.
        self.on_events: Callable[[], None] | None = None
        self._events_written = 0
        #: The reading connection and its thread (:meth:`read`); none: reads use :meth:`run`.
        self._reader: sqlite3.Connection | None = None
        self._read_executor: concurrent.futures.ThreadPoolExecutor | None = None
        #: Per thread, the connection of :meth:`read_point`; all of them, to close.
        self._inline = threading.local()
        self._inline_lock = threading.Lock()
        self._inline_readers: list[sqlite3.Connection] = []

    def _open_reader(self, path: Path) -> None:
        """A second connection, read-only, on a thread of its own, for :meth:`read`.

        Under WAL a reader neither waits for the writer nor blocks it: a status read
        then never queues behind the deposits' and deliveries' commits on the outbox's
        thread (each an fsync, ``synchronous=FULL``), which under load made a read wait
        for many of them. It sees every transaction committed before it starts."""
        reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        try:
            reader.execute("PRAGMA query_only = ON")
        except sqlite3.Error:
            reader.close()
            raise
        self._reader = reader
        self._read_executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="outbox-read", initializer=self._become_reader
        )

    def _inline_reader(self) -> sqlite3.Connection:
        """This thread's own read-only connection for :meth:`read_point` (opened once).

        Its busy timeout is zero: a caller on the event loop never waits on a lock; a
        busy database (rare under WAL: a reader waits only while the wal-index is being
        rebuilt) raises, and the read goes to the reading thread instead."""
        reader: sqlite3.Connection | None = getattr(self._inline, "db", None)
        if reader is None:
            reader = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=0
            )
            try:
                reader.execute("PRAGMA query_only = ON")
            except sqlite3.Error:
                reader.close()
                raise
            self._inline.db, self._inline.lock = reader, threading.Lock()
            with self._inline_lock:
                self._inline_readers.append(reader)
        return reader

    async def read_point(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a read of one row by key (:meth:`get`) right here, on this thread's own
        read-only connection: tens of microseconds, less than the hop to the reading
        thread costs (a submit, a wake-up, a call back into the loop). Without a reading
        connection (see :meth:`read`), or when this one is busy or fails: :meth:`read`."""
        if self._read_executor is None:
            return await self.read(fn, *args, **kwargs)
        try:
            reader = self._inline_reader()
        except sqlite3.Error as exc:
            log.warning("outbox: no read connection on this thread (%s): read on the reader's", exc)
            return await self.read(fn, *args, **kwargs)
        # For this call only (it does not await): this thread's _db and _lock are its own.
        self._on_reader.db, self._on_reader.lock = reader, self._inline.lock
        try:
            return fn(*args, **kwargs)
        except sqlite3.Error:
            pass  # busy (no waiting here) or broken: the reading thread's connection
        finally:
            del self._on_reader.db, self._on_reader.lock
        return await self.read(fn, *args, **kwargs)

    def _become_reader(self) -> None:
        """The read thread's start: its uses of :attr:`_db` and :attr:`_lock` are the reader's."""
        self._on_reader.db = self._reader
        self._on_reader.lock = threading.Lock()

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a read-only method (:meth:`get`, :meth:`list`, :meth:`depth`,
        :meth:`counts`) on the reading connection's thread, beside the writes. Without
        one (PostgreSQL; SQLite opened exclusive or read-only), or if it fails: :meth:`run`."""
        if self._read_executor is None:
            return await self.run(fn, *args, **kwargs)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._read_executor, lambda: fn(*args, **kwargs))
        except sqlite3.Error as exc:
            log.warning("outbox: the reading connection failed (%s): read on the writer's", exc)
            return await self.run(fn, *args, **kwargs)

    @property
    def _lock(self) -> threading.Lock:
        """The lock of the connection :attr:`_db` gives this thread."""
        lock: threading.Lock | None = getattr(self._on_reader, "lock", None)
        return lock if lock is not None else self._write_lock

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking method on the outbox's thread; then say it wrote journal events."""
        loop = asyncio.get_running_loop()
        before = self._events_written
        try:
            return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        finally:
            if self._events_written != before and self.on_events is not None:
                self.on_events()

    @property
    def _db(self) -> Db:
        reader: Db | None = getattr(self._on_reader, "db", None)
        return reader if reader is not None else self._store.db

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._read_executor is not None:
            self._read_executor.shutdown(wait=True)
        if self._reader is not None:
            self._reader.close()
        with self._inline_lock:
            for reader in self._inline_readers:
                reader.close()
            self._inline_readers.clear()
        self._store.close()

    def _transaction(self) -> AbstractContextManager[None]:
        return self._store.transaction()

    def _select(self, where: str, args: tuple[Any, ...] = ()) -> list[Message]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM messages {where}", args).fetchall()  # noqa: S608
        return [_message(row) for row in rows]

    def _event(
        self,
        operation: str,
        outcome: str,
        uuid: str,
        *,
        client: str = "",
        digest: str = "",
        level: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None:
        """The journal entry of a state change, inside that change's transaction."""
        self._db.execute(
            "INSERT INTO events (at, operation, outcome, client, uuid, digest, level, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self._clock(),
                operation,
                str(outcome),
                client,
                uuid,
                digest,
                level,
                json.dumps(detail or {}, sort_keys=True, ensure_ascii=False),
            ),
        )
        self._events_written += 1

    # -- accepting -------------------------------------------------------------------

    def enqueue_deposit(
        self,
        uuid: str,
        body: bytes,
        digest: str,
        *,
        client: str,
        level: str = "",
        awaiting_timestamp: bool = False,
        detail: dict[str, Any] | None = None,
    ) -> tuple[Message, bool]:
        """Persist a deposit; ``(message, created)``. Same UUID and digest: the existing
        message, ``created=False``; same UUID, other digest: :class:`DuplicateUuid`.
        *detail* goes into its journal entry (``cns.deposit.accept``)."""
        now = self._clock()
        status = Status.AWAITING_TIMESTAMP if awaiting_timestamp else Status.QUEUED
        with self._transaction():
            existing = self._select("WHERE id = ?", (uuid,))
            if existing:
                if existing[0].digest != digest or existing[0].operation != Operation.DEPOSIT:
                    raise DuplicateUuid(existing[0])
                return existing[0], False
            # DO NOTHING: a daemon beside this one (a shared store) inserted it meanwhile.
            cursor = self._db.execute(
                "INSERT INTO messages (id, operation, subject, client, digest, level, body, "
                "status, created_at, updated_at, next_attempt_at) "
                "VALUES (?, 'deposit', ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (uuid, uuid, client, digest, level, body, status.value, now, now, now),
            )
            if cursor.rowcount == 0:
                raced = self._select("WHERE id = ?", (uuid,))[0]
                if raced.digest != digest or raced.operation != Operation.DEPOSIT:
                    raise DuplicateUuid(raced)
                return raced, False
            self._event(
                "cns.deposit.accept",
                status,
                uuid,
                client=client,
                digest=digest,
                level=level,
                detail=detail,
            )
            return self._select("WHERE id = ?", (uuid,))[0], True

    def enqueue_cancel(
        self, fee_note_uuid: str, cancel_uuid: str, *, client: str, owner: str | None = None
    ) -> tuple[Message, bool]:
        """Persist the cancellation of a deposited fee note (at most one per note).

        *client* asks for it; *owner*: the fee note must be theirs (None: anyone's, for
        an admin), else :class:`UnknownMessage`. The cancellation belongs to the fee
        note's owner."""
        now = self._clock()
        with self._transaction():
            deposit = self._select("WHERE id = ? AND operation = 'deposit'", (fee_note_uuid,))
            if not deposit or (owner is not None and deposit[0].client != owner):
                raise UnknownMessage(fee_note_uuid)
            if deposit[0].status in (Status.REJECTED, Status.FAILED):
                raise InvalidState(
                    deposit[0], f"the deposit is {deposit[0].status}: the CNS has nothing to cancel"
                )
            existing = self._select("WHERE subject = ? AND operation = 'cancel'", (fee_note_uuid,))
            if existing:
                return existing[0], False
            cursor = self._db.execute(
                "INSERT INTO messages (id, operation, subject, client, digest, status, "
                "created_at, updated_at, next_attempt_at) "
                "VALUES (?, 'cancel', ?, ?, '', 'queued', ?, ?, ?) ON CONFLICT DO NOTHING",
                (cancel_uuid, fee_note_uuid, deposit[0].client, now, now, now),
            )
            if cursor.rowcount == 0:  # another daemon's cancellation won (a shared store)
                raced = self._select("WHERE subject = ? AND operation = 'cancel'", (fee_note_uuid,))
                if raced:
                    return raced[0], False
                raise InvalidState(deposit[0], f"message {cancel_uuid} already exists")
            self._event(
                "cns.cancel.accept",
                Status.QUEUED,
                cancel_uuid,
                client=client,
                detail={"fee_note": fee_note_uuid},
            )
            return self._select("WHERE id = ?", (cancel_uuid,))[0], True

    # -- reading -----------------------------------------------------------------------

    def get(
        self, uuid: str, *, with_body: bool = False, owner: str | None = None
    ) -> Message | None:
        """The message; None if there is none, or it is not *owner*'s (None: anyone's)."""
        with self._lock:
            found = self._select("WHERE id = ?", (uuid,))
            if not found or (owner is not None and found[0].client != owner):
                return None
            if not with_body:
                return found[0]
            (body,) = self._db.execute("SELECT body FROM messages WHERE id = ?", (uuid,)).fetchone()
        message = found[0]
        return Message(**{**message.__dict__, "body": body})

    def list(
        self,
        *,
        status: Status | None = None,
        since: float | None = None,
        after: int = 0,
        limit: int = 100,
        owner: str | None = None,
    ) -> list[Message]:
        """Messages in acceptance order, from ``seq > after``; *owner*'s only, if given."""
        clauses: list[str] = ["seq > ?"]
        args: list[object] = [after]
        if status is not None:
            clauses.append("status = ?")
            args.append(status.value)
        if since is not None:
            clauses.append("updated_at >= ?")
            args.append(since)
        if owner is not None:
            clauses.append("client = ?")
            args.append(owner)
        with self._lock:
            return self._select(
                f"WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?", (*args, limit)
            )

    def depth(self) -> tuple[int, float | None]:
        """Messages not final yet, and the acceptance time of the oldest one."""
        with self._lock:
            count, oldest = self._db.execute(
                "SELECT count(*), min(created_at) FROM messages "
                "WHERE status IN ('queued', 'sending', 'awaiting_timestamp')"
            ).fetchone()
        return count, oldest

    def next_due(self) -> float | None:
        with self._lock:
            (due,) = self._db.execute(
                "SELECT min(next_attempt_at) FROM messages WHERE status = 'queued'"
            ).fetchone()
        return due

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, count(*) FROM messages GROUP BY status")
            return dict(rows.fetchall())

    # -- the journal's events ----------------------------------------------------------

    def events_after(self, after: int, limit: int = 500) -> builtins.list[OutboxEvent]:
        """Events with ``seq > after``, oldest first (:mod:`sidecar.cns.journal_feed`)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, at, operation, outcome, client, uuid, digest, level, detail "
                "FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        return self._events(rows)

    @staticmethod
    def _events(rows: Sequence[Sequence[Any]]) -> builtins.list[OutboxEvent]:
        return [
            OutboxEvent(
                seq=seq,
                at=at,
                operation=operation,
                outcome=outcome,
                client=client,
                uuid=uuid,
                digest=digest,
                level=level,
                detail=json.loads(detail),
            )
            for seq, at, operation, outcome, client, uuid, digest, level, detail in rows
        ]

    def copy_events_to(self, journal: AuditJournal, batch: int = 500) -> tuple[int, int]:
        """Copy every event the journal lacks into it, each exactly once; ``(copied,
        last seq held)``. Blocking. The journal records how far it got (per store)."""
        source = f"outbox:{self.store_id}"
        copied = 0
        while True:
            count, last = journal.import_events(
                source, lambda after: self.events_after(after, batch)
            )
            copied += count
            if count < batch:
                return copied, last

    def prune_events(self, upto: int) -> None:
        """Forget the events the journal holds (``seq <= upto``)."""
        with self._transaction():
            self._db.execute("DELETE FROM events WHERE seq <= ?", (upto,))

    def probe(self) -> None:
        """A real write (one row), to learn whether the disk takes writes again."""
        with self._transaction():
            self._db.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'probe'"
            )

    @property
    def unrecorded(self) -> int:
        """Outcomes held in memory until the disk takes them."""
        return len(self._unrecorded)

    # -- delivering --------------------------------------------------------------------

    def recover(self) -> builtins.list[str]:
        """At start: rows left ``sending`` by a crash go back to the queue, due now.

        They are re-sent with the same UUID; the CNS deduplicates. On a disk that
        refuses the write, the recovery is done by the first claim that can write."""
        try:
            with self._transaction():
                ids = self._recover()
        except StorageUnavailable as exc:
            log.warning("outbox recovery postponed until the disk takes writes: %s", exc)
            self._recovery_due = True
            return []
        self._recovery_due = False
        return ids

    def _recover(self) -> builtins.list[str]:
        now = self._clock()
        rows = self._db.execute("SELECT id FROM messages WHERE status = 'sending'").fetchall()
        ids = [r[0] for r in rows]
        ids = [i for i in ids if i not in self._unrecorded]
        self._db.executemany(
            "UPDATE messages SET status = 'queued', next_attempt_at = ?, updated_at = ? "
            "WHERE id = ? AND status = 'sending'",
            [(now, now, i) for i in ids],
        )
        for uuid in ids:
            self._event("cns.recover", Status.QUEUED, uuid)
        return ids

    def requeue(self, ids: builtins.list[str]) -> None:
        """Deliveries cut short by a stop go back to the queue, due now."""
        now = self._clock()
        mine, owner = self._mine()
        with self._transaction():
            for uuid in ids:
                cursor = self._db.execute(
                    "UPDATE messages SET status = 'queued', next_attempt_at = ?, "  # noqa: S608
                    f"updated_at = ? WHERE id = ? AND status = 'sending'{mine}",
                    (now, now, uuid, *owner),
                )
                if cursor.rowcount:
                    self._event("cns.requeue", Status.QUEUED, uuid)

    def claim(self, limit: int) -> tuple[builtins.list[Message], builtins.list[Message]]:
        """Mark up to *limit* due messages ``sending`` and return them with their bodies.

        A cancellation is due only once its deposit is final; one whose deposit was
        rejected or failed is closed ``failed`` instead (second list), never sent.
        Outcomes held in memory (the disk was full) are recorded first."""
        now = self._clock()
        claimed: list[Message] = []
        closed: list[Message] = []
        recovering, unrecorded = self._recovery_due, list(self._unrecorded.items())
        with self._transaction():
            if recovering:
                self._recover()
            for uuid, outcome in unrecorded:
                self._finish(uuid, **outcome)
            for message in self._claimable(now, limit):
                if message.operation == Operation.CANCEL:
                    (deposit_status,) = self._db.execute(
                        "SELECT status FROM messages WHERE id = ?", (message.subject,)
                    ).fetchone()
                    if deposit_status != Status.DELIVERED:
                        error = f"not sent: the deposit was {deposit_status}"
                        self._db.execute(
                            "UPDATE messages SET status = 'failed', last_error = ?, "
                            "updated_at = ? WHERE id = ?",
                            (error, now, message.id),
                        )
                        self._event(
                            "cns.cancel",
                            Status.FAILED,
                            message.id,
                            client=message.client,
                            detail={"reason": "deposit not delivered", "fee_note": message.subject},
                        )
                        closed.append(message)
                        continue
                self._mark_sending(message, now)
                self._event(
                    f"cns.{message.operation}.send",
                    Status.SENDING,
                    message.id,
                    client=message.client,
                    digest=message.digest,
                    level=message.level,
                    detail={"attempt": message.attempts + 1, "fee_note": message.subject},
                )
                claimed.append(
                    Message(
                        **{
                            **message.__dict__,
                            "status": Status.SENDING,
                            "attempts": message.attempts + 1,
                        }
                    )
                )
        # Committed with the claims (on a rollback, all are kept for the next claim).
        self._recovery_due = self._recovery_due and not recovering
        for uuid, _ in unrecorded:
            self._unrecorded.pop(uuid, None)
        return claimed, closed

    # Where the stores differ (see the module's docstring).
    #: A message is due (``m``: the message; the cancellation's condition is added).
    _DUE = "m.status = 'queued' AND m.next_attempt_at <= ?"
    #: After the claim's SELECT: how a shared store keeps two daemons off one row.
    _CLAIM_LOCK = ""

    def _claimable(self, now: float, limit: int) -> builtins.list[Message]:
        """The due messages, with their bodies, oldest first (inside the claim)."""
        due_args: tuple[Any, ...] = (now,) * self._DUE.count("?")
        rows = self._db.execute(
            f"SELECT {_COLUMNS}, body FROM messages m WHERE {self._DUE} "  # noqa: S608
            "AND (m.operation = 'deposit' OR NOT EXISTS ("
            "  SELECT 1 FROM messages d WHERE d.id = m.subject AND d.operation = 'deposit'"
            f"  AND d.status NOT IN ('delivered', 'rejected', 'failed'))) "
            f"ORDER BY m.seq LIMIT ?{self._CLAIM_LOCK}",
            (*due_args, limit),
        ).fetchall()
        return [_message(row[:-1], row[-1]) for row in rows]

    def _mark_sending(self, message: Message, now: float) -> None:
        self._db.execute(
            "UPDATE messages SET status = 'sending', attempts = attempts + 1, "
            "updated_at = ? WHERE id = ?",
            (now, message.id),
        )

    def _still_mine(self, uuid: str) -> bool:
        """Whether an outcome for *uuid* is this process's to record (inside it)."""
        return True

    def _mine(self) -> tuple[str, tuple[Any, ...]]:
        """The SQL condition (and its arguments) of "a delivery this process is making":
        every ``sending`` row for the only daemon of an SQLite store."""
        return "", ()

    def finish(
        self,
        uuid: str,
        status: Status,
        *,
        answer_status: int | None = None,
        answer_type: str = "",
        answer_body: bytes | None = None,
        reasons: builtins.list[dict[str, str]] | None = None,
        error: str = "",
        retry_at: float | None = None,
        event: str = "",
        settled_by: str = "",
    ) -> Message:
        """Record the outcome of an attempt: final, or back to the queue at *retry_at*.

        Journaled as ``cns.<operation>`` (or *event*), with *settled_by* when the outcome
        came from elsewhere than the attempt's answer (the CNS's status lookup). On a
        disk that refuses the write, the outcome is kept in memory and recorded by the
        next :meth:`claim` that can write; :class:`StorageUnavailable` is raised all the
        same."""
        if status == Status.QUEUED and retry_at is None:
            raise ValueError("a retried message needs retry_at")
        outcome: dict[str, Any] = {
            "status": status,
            "answer_status": answer_status,
            "answer_type": answer_type,
            "answer_body": answer_body,
            "reasons": reasons,
            "error": error,
            "retry_at": retry_at,
            "event": event,
            "settled_by": settled_by,
            "at": self._clock(),
        }
        try:
            with self._transaction():
                return self._finish(uuid, **outcome)
        except StorageUnavailable:
            self._unrecorded[uuid] = outcome
            raise

    def _finish(
        self,
        uuid: str,
        *,
        status: Status,
        answer_status: int | None,
        answer_type: str,
        answer_body: bytes | None,
        reasons: builtins.list[dict[str, str]] | None,
        error: str,
        retry_at: float | None,
        event: str,
        settled_by: str,
        at: float,
    ) -> Message:
        if not self._still_mine(uuid):
            # Its lease ran out and another daemon took the delivery over: its outcome
            # is that daemon's to record (the CNS deduplicated the second sending).
            log.info("message %s: delivered by another daemon meanwhile", uuid)
            return self._select("WHERE id = ?", (uuid,))[0]
        # ``at``: when the answer came, which is when it is delivered, even if the disk
        # could only take it later.
        self._db.execute(
            "UPDATE messages SET status = ?, updated_at = ?, next_attempt_at = ?, "
            "delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END, "
            "last_error = ?, answer_status = coalesce(?, answer_status), "
            "answer_type = CASE WHEN CAST(? AS INTEGER) IS NULL THEN answer_type ELSE ? END, "
            "answer_body = coalesce(?, answer_body), reasons = ? WHERE id = ?",
            (
                status.value,
                at,
                retry_at if retry_at is not None else at,
                status.value,
                at,
                error,
                answer_status,
                answer_status,
                answer_type,
                answer_body,
                json.dumps(reasons or [], ensure_ascii=False),
                uuid,
            ),
        )
        message = self._select("WHERE id = ?", (uuid,))[0]
        self._event(
            event or f"cns.{message.operation}",
            message.status,
            uuid,
            client=message.client,
            digest=message.digest,
            level=message.level,
            detail={
                "attempt": message.attempts,
                "cns_status": answer_status,
                "error": error or None,
                "fee_note": message.subject,
                "answer_sha256": hashlib.sha256(answer_body).hexdigest()
                if answer_body is not None
                else None,
                **({"settled_by": settled_by} if settled_by else {}),
            },
        )
        return message

    # -- offline mode ------------------------------------------------------------------

    def awaiting_timestamp(self) -> builtins.list[Message]:
        with self._lock:
            messages = self._select("WHERE status = 'awaiting_timestamp' ORDER BY seq")
            bodies = dict(
                self._db.execute(
                    "SELECT id, body FROM messages WHERE status = 'awaiting_timestamp'"
                ).fetchall()
            )
        return [Message(**{**m.__dict__, "body": bodies.get(m.id)}) for m in messages]

    def timestamped(self, uuid: str, body: bytes, level: str) -> Message:
        """An ``awaiting_timestamp`` deposit upgraded (e.g. to B-LT): queue it."""
        now = self._clock()
        with self._transaction():
            cursor = self._db.execute(
                "UPDATE messages SET body = ?, level = ?, status = 'queued', updated_at = ?, "
                "next_attempt_at = ? WHERE id = ? AND status = 'awaiting_timestamp'",
                (body, level, now, now, uuid),
            )
            if cursor.rowcount != 1:
                raise UnknownMessage(uuid)
            message = self._select("WHERE id = ?", (uuid,))[0]
            self._event(
                "cns.timestamp_upgrade",
                Status.QUEUED,
                uuid,
                client=message.client,
                level=level,
                digest=hashlib.sha256(body).hexdigest(),
            )
            return message

    def unknown(self) -> builtins.list[Message]:
        """Messages whose outcome at the CNS is not known (to be asked about)."""
        with self._lock:
            return self._select("WHERE status = 'unknown' ORDER BY seq")

    def expedite(self) -> int:
        """Queued messages waiting for their next retry become due now (the CNS is back)."""
        now = self._clock()
        with self._transaction():
            cursor = self._db.execute(
                "UPDATE messages SET next_attempt_at = ? "
                "WHERE status = 'queued' AND next_attempt_at > ?",
                (now, now),
            )
            return cursor.rowcount

    # -- operator ----------------------------------------------------------------------

    def retry(self, uuid: str) -> Message:
        """``failed`` or ``unknown`` → ``queued`` with a fresh retry budget (``sidecar
        outbox retry``): sent again with the same UUID, which the CNS deduplicates."""
        now = self._clock()
        with self._transaction():
            found = self._select("WHERE id = ?", (uuid,))
            if not found:
                raise UnknownMessage(uuid)
            if found[0].status not in (Status.FAILED, Status.UNKNOWN):
                raise InvalidState(
                    found[0],
                    f"only a failed or unknown message can be retried, not {found[0].status}",
                )
            self._db.execute(
                "UPDATE messages SET status = 'queued', attempts = 0, next_attempt_at = ?, "
                "updated_at = ?, last_error = '' WHERE id = ?",
                (now, now, uuid),
            )
            self._event(
                "cns.retry", Status.QUEUED, uuid, client=found[0].client, detail={"by": "operator"}
            )
            return self._select("WHERE id = ?", (uuid,))[0]
