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
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "FINAL",
    "DuplicateUuid",
    "InvalidState",
    "Message",
    "Operation",
    "Outbox",
    "Status",
    "UnknownMessage",
]

T = TypeVar("T")


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


class DuplicateUuid(Exception):
    """This UUID was already accepted with different content."""

    def __init__(self, existing: Message) -> None:
        super().__init__(f"message {existing.id} already accepted with different content")
        self.existing = existing


class UnknownMessage(Exception):
    """No message with this UUID."""


class InvalidState(Exception):
    """The message is not in a state that allows this."""

    def __init__(self, message: Message, detail: str) -> None:
        super().__init__(detail)
        self.message = message


_SCHEMA = """
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

_COLUMNS = (
    "seq, id, operation, subject, client, digest, level, status, attempts, created_at, "
    "updated_at, next_attempt_at, delivered_at, last_error, answer_status, answer_type, "
    "answer_body, reasons"
)


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
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
        operation=Operation(operation),
        subject=subject,
        client=client,
        digest=digest,
        level=level,
        status=Status(status),
        attempts=attempts,
        created_at=created_at,
        updated_at=updated_at,
        next_attempt_at=next_attempt_at,
        delivered_at=delivered_at,
        last_error=last_error,
        answer_status=answer_status,
        answer_type=answer_type,
        answer_body=answer_body,
        reasons=json.loads(reasons),
        body=body,
    )


class Outbox:
    """The outbox database. Methods are blocking; call them through :meth:`run`."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit, which is what makes 202 mean durable.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="outbox")

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking method on the outbox's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self._lock)

    def _select(self, where: str, args: tuple[Any, ...] = ()) -> list[Message]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM messages {where}", args).fetchall()  # noqa: S608
        return [_message(row) for row in rows]

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
    ) -> tuple[Message, bool]:
        """Persist a deposit; ``(message, created)``. Same UUID and digest: the existing
        message, ``created=False``; same UUID, other digest: :class:`DuplicateUuid`."""
        now = self._clock()
        status = Status.AWAITING_TIMESTAMP if awaiting_timestamp else Status.QUEUED
        with self._transaction():
            existing = self._select("WHERE id = ?", (uuid,))
            if existing:
                if existing[0].digest != digest or existing[0].operation != Operation.DEPOSIT:
                    raise DuplicateUuid(existing[0])
                return existing[0], False
            self._db.execute(
                "INSERT INTO messages (id, operation, subject, client, digest, level, body, "
                "status, created_at, updated_at, next_attempt_at) "
                "VALUES (?, 'deposit', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (uuid, uuid, client, digest, level, body, status.value, now, now, now),
            )
            return self._select("WHERE id = ?", (uuid,))[0], True

    def enqueue_cancel(
        self, fee_note_uuid: str, cancel_uuid: str, *, client: str
    ) -> tuple[Message, bool]:
        """Persist the cancellation of a deposited fee note (at most one per note)."""
        now = self._clock()
        with self._transaction():
            deposit = self._select("WHERE id = ? AND operation = 'deposit'", (fee_note_uuid,))
            if not deposit:
                raise UnknownMessage(fee_note_uuid)
            if deposit[0].status in (Status.REJECTED, Status.FAILED):
                raise InvalidState(
                    deposit[0], f"the deposit is {deposit[0].status}: the CNS has nothing to cancel"
                )
            existing = self._select("WHERE subject = ? AND operation = 'cancel'", (fee_note_uuid,))
            if existing:
                return existing[0], False
            self._db.execute(
                "INSERT INTO messages (id, operation, subject, client, digest, status, "
                "created_at, updated_at, next_attempt_at) "
                "VALUES (?, 'cancel', ?, ?, '', 'queued', ?, ?, ?)",
                (cancel_uuid, fee_note_uuid, client, now, now, now),
            )
            return self._select("WHERE id = ?", (cancel_uuid,))[0], True

    # -- reading -----------------------------------------------------------------------

    def get(self, uuid: str, *, with_body: bool = False) -> Message | None:
        with self._lock:
            found = self._select("WHERE id = ?", (uuid,))
            if not found:
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
    ) -> list[Message]:
        """Messages in acceptance order, from ``seq > after``."""
        clauses: list[str] = ["seq > ?"]
        args: list[object] = [after]
        if status is not None:
            clauses.append("status = ?")
            args.append(status.value)
        if since is not None:
            clauses.append("updated_at >= ?")
            args.append(since)
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

    # -- delivering --------------------------------------------------------------------

    def recover(self) -> builtins.list[str]:
        """At start: rows left ``sending`` by a crash go back to the queue, due now.

        They are re-sent with the same UUID; the CNS deduplicates."""
        now = self._clock()
        with self._transaction():
            ids = [
                r[0] for r in self._db.execute("SELECT id FROM messages WHERE status = 'sending'")
            ]
            self._db.execute(
                "UPDATE messages SET status = 'queued', next_attempt_at = ?, updated_at = ? "
                "WHERE status = 'sending'",
                (now, now),
            )
        return ids

    def requeue(self, ids: builtins.list[str]) -> None:
        """Deliveries cut short by a stop go back to the queue, due now."""
        now = self._clock()
        with self._transaction():
            self._db.executemany(
                "UPDATE messages SET status = 'queued', next_attempt_at = ?, updated_at = ? "
                "WHERE id = ? AND status = 'sending'",
                [(now, now, i) for i in ids],
            )

    def claim(self, limit: int) -> tuple[builtins.list[Message], builtins.list[Message]]:
        """Mark up to *limit* due messages ``sending`` and return them with their bodies.

        A cancellation is due only once its deposit is final; one whose deposit was
        rejected or failed is closed ``failed`` instead (second list), never sent."""
        now = self._clock()
        claimed: list[Message] = []
        closed: list[Message] = []
        with self._transaction():
            rows = self._db.execute(
                f"SELECT {_COLUMNS}, body FROM messages m WHERE m.status = 'queued' "  # noqa: S608
                "AND m.next_attempt_at <= ? AND (m.operation = 'deposit' OR NOT EXISTS ("
                "  SELECT 1 FROM messages d WHERE d.id = m.subject AND d.operation = 'deposit'"
                "  AND d.status NOT IN ('delivered', 'rejected', 'failed'))) "
                "ORDER BY m.seq LIMIT ?",
                (now, limit),
            ).fetchall()
            for row in rows:
                message = _message(row[:-1], row[-1])
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
                        closed.append(message)
                        continue
                self._db.execute(
                    "UPDATE messages SET status = 'sending', attempts = attempts + 1, "
                    "updated_at = ? WHERE id = ?",
                    (now, message.id),
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
        return claimed, closed

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
    ) -> Message:
        """Record the outcome of an attempt: final, or back to the queue at *retry_at*."""
        now = self._clock()
        if status == Status.QUEUED and retry_at is None:
            raise ValueError("a retried message needs retry_at")
        with self._transaction():
            self._db.execute(
                "UPDATE messages SET status = ?, updated_at = ?, next_attempt_at = ?, "
                "delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END, "
                "last_error = ?, answer_status = coalesce(?, answer_status), "
                "answer_type = CASE WHEN ? IS NULL THEN answer_type ELSE ? END, "
                "answer_body = coalesce(?, answer_body), reasons = ? WHERE id = ?",
                (
                    status.value,
                    now,
                    retry_at if retry_at is not None else now,
                    status.value,
                    now,
                    error,
                    answer_status,
                    answer_status,
                    answer_type,
                    answer_body,
                    json.dumps(reasons or [], ensure_ascii=False),
                    uuid,
                ),
            )
            return self._select("WHERE id = ?", (uuid,))[0]

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
            return self._select("WHERE id = ?", (uuid,))[0]

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
            return self._select("WHERE id = ?", (uuid,))[0]


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` under the outbox lock (rollback on error)."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            # IMMEDIATE: take the write lock now, so that a CLI or a second daemon on the
            # same file waits instead of failing halfway through.
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            self._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self._lock.release()
