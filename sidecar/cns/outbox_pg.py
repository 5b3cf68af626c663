"""The outbox in PostgreSQL, shared by several daemons (``[cns] outbox = "postgresql://…"``).

The same messages, states and journal events as the SQLite outbox
(:class:`~sidecar.cns.outbox.Outbox`, whose SQL it runs), with what sharing needs:

- Accepting is one committed transaction (PostgreSQL's commit is durable with its
  default ``synchronous_commit``): the 202 comes after it. Two daemons accepting the
  same UUID at once make one row (``ON CONFLICT DO NOTHING``, then the digest check).
- Claiming takes row leases: ``SELECT … FOR UPDATE SKIP LOCKED`` (two daemons never
  claim the same row) and marks each claimed row ``sending`` with its lease (this
  process, until ``lease_until``). A daemon killed mid-delivery leaves its rows
  ``sending``; once their lease has run out any daemon's next claim takes them over
  (journaled ``cns.lease_expired``) and sends them again under the same UUID, which
  the CNS deduplicates. So no daemon "recovers" every ``sending`` row at start, as
  the only daemon of an SQLite outbox does: those may be another daemon's deliveries.
- An outcome is recorded only if the delivery is still this process's (same lease,
  same attempt): a daemon that answered after its lease ran out leaves the row to the
  daemon that took it over. An ``unknown`` message that every daemon asks the CNS
  about is settled by the first answer recorded.
- The journal events move into the journal (:class:`~sidecar.audit_pg.PgAuditJournal`,
  same database) in one transaction that deletes them here and appends them there.

The schema is created and migrated by the daemon (:func:`sidecar.pgstore.migrate`,
component ``outbox``).

The lease must outlast one delivery (an attempt and, when the retry budget is spent,
the CNS's status lookup): :func:`lease_for` gives twice their timeouts.
"""

from __future__ import annotations

import builtins
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..audit import event_fields
from ..audit_pg import PgAuditJournal, chain_lock, insert_chained
from ..config import CnsSettings
from ..migrations import Migration
from ..pgstore import PgStore, migrate
from .outbox import Message, Outbox, OutboxEvent, Status, UnknownMessage

if TYPE_CHECKING:
    from ..audit import AuditJournal

__all__ = ["PgOutbox", "lease_for"]

log = logging.getLogger("sidecar.cns.outbox")

#: Seconds a claim holds when nothing says otherwise.
DEFAULT_LEASE = 120.0

_SCHEMA_V1 = """
CREATE TABLE messages (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    operation       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    client          TEXT NOT NULL,
    digest          TEXT NOT NULL,
    level           TEXT NOT NULL DEFAULT '',
    body            BYTEA,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      DOUBLE PRECISION NOT NULL,
    updated_at      DOUBLE PRECISION NOT NULL,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    delivered_at    DOUBLE PRECISION,
    last_error      TEXT NOT NULL DEFAULT '',
    answer_status   INTEGER,
    answer_type     TEXT NOT NULL DEFAULT '',
    answer_body     BYTEA,
    reasons         TEXT NOT NULL DEFAULT '[]',
    lease_owner     TEXT NOT NULL DEFAULT '',
    lease_until     DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX one_cancel_per_note ON messages (subject) WHERE operation = 'cancel';
CREATE INDEX by_status ON messages (status, next_attempt_at);
CREATE INDEX by_lease ON messages (lease_until) WHERE status = 'sending';
CREATE INDEX by_update ON messages (updated_at);
CREATE INDEX by_owner ON messages (client, seq);
CREATE TABLE events (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        DOUBLE PRECISION NOT NULL,
    operation TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    client    TEXT NOT NULL,
    uuid      TEXT NOT NULL,
    digest    TEXT NOT NULL,
    level     TEXT NOT NULL,
    detail    TEXT NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta (key, value) VALUES ('store_id', md5(random()::text || clock_timestamp()::text));
INSERT INTO meta (key, value) VALUES ('probe', '0');
"""

_MIGRATIONS = (Migration(1, "messages with leases, journal events, store id", _SCHEMA_V1),)


def lease_for(settings: CnsSettings) -> float:
    """How long a claim holds: twice one delivery's bound (attempt, then lookup)."""
    return 2 * (settings.connect_timeout + settings.delivery_timeout)


class PgOutbox(Outbox):
    """The outbox in a PostgreSQL database. Blocking; call through :meth:`run`."""

    _DUE = (
        "((m.status = 'queued' AND m.next_attempt_at <= ?) "
        "OR (m.status = 'sending' AND m.lease_until <= ?))"
    )
    # OF m: the row claimed, not the deposit a cancellation's condition reads.
    _CLAIM_LOCK = " FOR UPDATE OF m SKIP LOCKED"

    def __init__(
        self,
        url: str,
        *,
        local_dir: Path | None = None,
        lease_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # No file: ``path``'s parent is the local directory the storage check watches.
        self.path = (local_dir or Path.cwd()) / "outbox.postgresql"
        self.lease_seconds = lease_seconds or DEFAULT_LEASE
        #: This process, as the owner of its leases.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._store = PgStore(url, "outbox")
        migrate(self._store, "outbox", _MIGRATIONS)
        #: Deliveries this process claimed and has not recorded: uuid → attempt.
        self._claimed: dict[str, int] = {}
        self._opened(self._store.health, clock)

    # -- claiming with leases ------------------------------------------------------------

    def _recover(self) -> builtins.list[str]:
        return []  # other daemons' deliveries are under way: leases tell (see the module)

    def _claimable(self, now: float, limit: int) -> builtins.list[Message]:
        messages = super()._claimable(now, limit)
        for message in messages:
            if message.status == Status.SENDING:
                log.warning(
                    "message %s: the lease of the daemon sending it ran out: taken over",
                    message.id,
                )
                self._event(
                    "cns.lease_expired",
                    Status.QUEUED,
                    message.id,
                    client=message.client,
                    detail={"attempt": message.attempts},
                )
        return messages

    def _mark_sending(self, message: Message, now: float) -> None:
        self._db.execute(
            "UPDATE messages SET status = 'sending', attempts = attempts + 1, updated_at = ?, "
            "lease_owner = ?, lease_until = ? WHERE id = ?",
            (now, self.owner, now + self.lease_seconds, message.id),
        )
        self._claimed[message.id] = message.attempts + 1

    def _still_mine(self, uuid: str) -> bool:
        attempt = self._claimed.get(uuid)
        if attempt is None:
            # Not a delivery: an unknown one settled by the CNS's lookup, an upgrade that
            # failed. Every daemon does those: the first to record it wins.
            row = self._db.execute(
                "SELECT status FROM messages WHERE id = ? FOR UPDATE", (uuid,)
            ).fetchone()
            return row is not None and row[0] in (Status.UNKNOWN, Status.AWAITING_TIMESTAMP)
        row = self._db.execute(
            "SELECT 1 FROM messages WHERE id = ? AND status = 'sending' AND lease_owner = ? "
            "AND attempts = ? FOR UPDATE",
            (uuid, self.owner, attempt),
        ).fetchone()
        return row is not None

    def _mine(self) -> tuple[str, tuple[Any, ...]]:
        return " AND lease_owner = ?", (self.owner,)

    def finish(self, uuid: str, *args: Any, **kwargs: Any) -> Message:
        message = super().finish(uuid, *args, **kwargs)
        self._claimed.pop(uuid, None)  # recorded (committed): no longer in flight
        return message

    def requeue(self, ids: builtins.list[str]) -> None:
        super().requeue(ids)
        for uuid in ids:
            self._claimed.pop(uuid, None)

    def timestamped(self, uuid: str, body: bytes, level: str) -> Message:
        """As the SQLite store's; a deposit another daemon upgraded meanwhile is left as
        that daemon made it (both asked the TSA; one result is kept)."""
        try:
            return super().timestamped(uuid, body, level)
        except UnknownMessage:
            current = self.get(uuid)
            if current is None:
                raise
            return current

    def next_due(self) -> float | None:
        """The next queued message due, or the next lease to run out."""
        with self._lock:
            (due,) = self._db.execute(
                "SELECT least((SELECT min(next_attempt_at) FROM messages WHERE status = "
                "'queued'), (SELECT min(lease_until) FROM messages WHERE status = 'sending'))"
            ).fetchone()
        return due

    # -- the journal -------------------------------------------------------------------

    def copy_events_to(self, journal: AuditJournal, batch: int = 500) -> tuple[int, int]:
        """Move the events into the journal in this database: deleted here and appended
        there in one transaction, so each is journaled once, whichever daemon moves it."""
        if not isinstance(journal, PgAuditJournal):
            raise TypeError("a PostgreSQL outbox journals into its own database")
        copied, last = 0, 0
        while True:
            with self._transaction():
                # The chain's lock first: one mover at a time, in event order.
                rows = self._moved_events(batch)
                for event in rows:
                    insert_chained(self._db, event_fields(event))
            copied += len(rows)
            last = max([last, *(event.seq for event in rows)])
            if len(rows) < batch:
                return copied, last

    def _moved_events(self, batch: int) -> builtins.list[OutboxEvent]:
        chain_lock(self._db)
        rows = self._db.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?) "
            "RETURNING seq, at, operation, outcome, client, uuid, digest, level, detail",
            (batch,),
        ).fetchall()
        return self._events(sorted(rows))

    def prune_events(self, upto: int) -> None:
        """Nothing to prune: :meth:`copy_events_to` moves the events."""

    def probe(self) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE meta SET value = (value::bigint + 1)::text WHERE key = 'probe'"
            )
