"""Delivery from the outbox to the CNS: retries with backoff, final answers, crash recovery.

What an answer means for a message:

- 2xx: ``delivered`` (the CNS's answer kept).
- 408, 425, 429 and every 5xx, a timeout, a refused or dropped connection: the CNS
  may not have processed it, or may have; either way it is sent again later with the
  same UUID, which the CNS deduplicates. The delay grows exponentially
  (``backoff_initial * backoff_factor ** (attempt - 1)``, at most ``backoff_max``)
  and a random share (``backoff_jitter``) is taken off so that daemons brought back
  by the same network outage do not retry in step.
- any other 4xx: ``rejected``, final, with the CNS's reasons.

After ``max_attempts`` the last answer may have been lost after the CNS booked the
message (a timeout, a dropped connection), so the worker does not guess: it asks the
CNS what became of the message's UUID (:meth:`CnsTransport.lookup`). The CNS's first
answer under that key settles it (``delivered``/``rejected``); "nothing processed
under that key" makes it ``failed`` (sending it again is safe); no answer to the
question makes it ``unknown``: it may be booked, it must not be resubmitted under a
new UUID, and the worker asks again (every :data:`LOOKUP_SECONDS`, and as soon as
the CNS answers after an outage) until the CNS says.

Outages: a delivery that gets no answer at all (refused, reset, timeout) starts a
probe of the CNS's health operation every :data:`PROBE_SECONDS` (bounded by
``connect_timeout``). If a probe gets no answer either, the CNS is down: deliveries
pause (they would only spend their retry budget) until a probe gets an answer; then
every message waiting for its next retry is sent at once, instead of at its next
retry step, which after a long outage is up to ``backoff_max`` away.

At start, rows left ``sending`` by a crash are queued again (:meth:`Outbox.recover`).
On stop, deliveries under way get ``drain_timeout`` seconds to finish; the rest are
cancelled and queued again.

The outbox journals every state change itself, in the same transaction
(:mod:`sidecar.cns.journal_feed`). An outcome the disk cannot take (full, read-only)
is kept by the outbox and recorded at the next claim that can write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import CnsSettings
from ..errors import UpstreamUnavailable
from ..storage import StorageUnavailable
from .outbox import Message, Operation, Outbox, Status
from .transport import CnsAnswer, CnsTransport, CnsTransportError

if TYPE_CHECKING:
    from ..metrics import Metrics

__all__ = [
    "RETRYABLE_STATUSES",
    "DeliveryWorker",
    "TimestampUnavailable",
    "Upgrader",
    "backoff_delay",
]

log = logging.getLogger("sidecar.cns.worker")

#: 4xx answers that say "not now" rather than "never".
RETRYABLE_STATUSES = frozenset({408, 425, 429})

#: How often the worker looks at the database even when nothing woke it (a CLI retry,
#: a second process, the offline-mode upgrades).
POLL_SECONDS = 2.0
#: Seconds between two probes of a CNS that gave no answer (jittered by ±50 %).
PROBE_SECONDS = 2.0
#: Seconds between two rounds of status lookups for messages left ``unknown``.
LOOKUP_SECONDS = 60.0


class TimestampUnavailable(UpstreamUnavailable):
    """The TSA (or revocation data) is still unreachable: try the upgrade later."""


#: The signing engine's seam for the offline mode: a fee note signed at B-B in, the
#: same at B-LT out (``(xml, level)``); raises :class:`TimestampUnavailable`.
Upgrader = Callable[[bytes], Awaitable[tuple[bytes, str]]]


def backoff_delay(attempt: int, settings: CnsSettings, rng: random.Random) -> float:
    """Seconds before attempt ``attempt + 1``, after *attempt* failed."""
    base = min(
        settings.backoff_max, settings.backoff_initial * settings.backoff_factor ** (attempt - 1)
    )
    jitter = min(max(settings.backoff_jitter, 0.0), 1.0)
    return base * (1.0 - jitter * rng.random())


@dataclass(frozen=True)
class _Outcome:
    status: Status
    answer: CnsAnswer | None = None
    error: str = ""
    #: No answer at all (refused, reset, timeout): the CNS may be down.
    unanswered: bool = False
    #: Settled by the CNS's status lookup, not by the attempt's own answer.
    looked_up: bool = False


def _judge(answer: CnsAnswer) -> _Outcome:
    """What one CNS answer means for its message."""
    if answer.ok:
        return _Outcome(Status.DELIVERED, answer)
    if answer.status >= 500 or answer.status in RETRYABLE_STATUSES:
        return _Outcome(Status.QUEUED, answer, f"CNS answered {answer.status}")
    return _Outcome(Status.REJECTED, answer, f"CNS answered {answer.status}")


class DeliveryWorker:
    """Delivers queued messages, ``settings.workers`` at a time."""

    def __init__(
        self,
        outbox: Outbox,
        transport: CnsTransport,
        settings: CnsSettings,
        *,
        upgrader: Upgrader | None = None,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.transport = transport
        self.settings = settings
        self.upgrader = upgrader
        #: ``sidecar_cns_messages{operation, result}``: final states, retries, upgrades.
        self.metrics = metrics
        self._rng = rng or random.SystemRandom()
        self._wake = asyncio.Event()
        self._stopping = False
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._last_upgrade_try = 0.0
        self.poll_seconds = POLL_SECONDS
        self.probe_seconds = PROBE_SECONDS
        self.lookup_seconds = LOOKUP_SECONDS
        #: Since when (wall clock) a probe found the CNS not answering; None: not known down.
        self.outage_since: float | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._lookup_task: asyncio.Task[None] | None = None
        self._last_lookup = 0.0

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        recovered = await self.outbox.run(self.outbox.recover)
        for uuid in recovered:
            log.warning("message %s was being sent when the daemon stopped: queued again", uuid)
        self._loop_task = asyncio.create_task(self._run(), name="cns-delivery")

    def wake(self) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop claiming; let deliveries under way finish, then requeue what is left."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        for side in (self._probe_task, self._lookup_task):
            if side is not None:
                side.cancel()
                await asyncio.gather(side, return_exceptions=True)
        pending = list(self._inflight.values())
        if pending:
            log.info("waiting for %d CNS deliveries under way", len(pending))
            _, unfinished = await asyncio.wait(pending, timeout=self.settings.drain_timeout)
            ids = [uuid for uuid, task in self._inflight.items() if task in unfinished]
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
            if ids:
                await self.outbox.run(self.outbox.requeue, ids)
                log.info("%d CNS deliveries cut short: queued again", len(ids))

    # -- the loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._upgrade_awaiting()
                self._look_up_unknown()
                free = self.settings.workers - len(self._inflight)
                # While the CNS is known down, attempts would only spend their budget.
                if free > 0 and self.outage_since is None:
                    claimed, closed = await self.outbox.run(self.outbox.claim, free)
                    for message in closed:
                        self._count(message.operation, "failed")
                    for message in claimed:
                        task = asyncio.create_task(self._deliver(message))
                        self._inflight[message.id] = task
                        task.add_done_callback(self._when_done(message.id))
                    if claimed or closed:
                        continue  # there may be more
                timeout = await self._idle_seconds()
            except StorageUnavailable as exc:  # a full disk: wait for room, quietly
                log.warning("CNS delivery waits: %s", exc)
                timeout = self.poll_seconds
            except Exception:  # the loop must survive a bad row
                log.exception("CNS delivery loop error; retrying shortly")
                timeout = self.poll_seconds
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _done(self, uuid: str) -> None:
        self._inflight.pop(uuid, None)
        self._wake.set()

    def _when_done(self, uuid: str) -> Callable[[asyncio.Task[None]], None]:
        """The done-callback of the delivery of message ``uuid``."""
        return lambda _task: self._done(uuid)

    async def _idle_seconds(self) -> float:
        if len(self._inflight) >= self.settings.workers or self.outage_since is not None:
            return self.poll_seconds  # (the prober wakes the loop when the CNS is back)
        due = await self.outbox.run(self.outbox.next_due)
        if due is None:
            return self.poll_seconds
        return min(self.poll_seconds, max(0.0, due - time.time()))

    # -- one delivery ------------------------------------------------------------------

    async def _deliver(self, message: Message) -> None:
        outcome = await self._attempt(message)
        if outcome.unanswered:
            self._probe()
        if outcome.status == Status.QUEUED and message.attempts >= self.settings.max_attempts:
            outcome = await self._settle(message, outcome)
        await self._record(message, outcome)

    async def _record(self, message: Message, outcome: _Outcome) -> None:
        retry_at = None
        status = outcome.status
        if status == Status.QUEUED:
            retry_at = time.time() + backoff_delay(message.attempts, self.settings, self._rng)
        answer = outcome.answer
        try:
            final = await self.outbox.run(
                self.outbox.finish,
                message.id,
                status,
                answer_status=answer.status if answer else None,
                answer_type=answer.content_type if answer else "",
                answer_body=answer.body if answer else None,
                reasons=answer.reasons() if answer and status == Status.REJECTED else None,
                error=outcome.error,
                retry_at=retry_at,
                settled_by="status lookup" if outcome.looked_up else "",
            )
        except StorageUnavailable as exc:  # the outbox keeps the outcome until it can write
            log.warning("%s %s: %s; outcome held until it can", message.operation, message.id, exc)
            return
        self._count(message.operation, "retried" if final.status == Status.QUEUED else final.status)
        log.info(
            "%s %s attempt %d: %s%s",
            message.operation,
            message.id,
            message.attempts,
            final.status,
            f" ({outcome.error})" if outcome.error else "",
        )

    async def _attempt(self, message: Message) -> _Outcome:
        try:
            if message.operation == Operation.DEPOSIT:
                answer = await self.transport.deposit(message.id, message.body or b"")
            else:
                answer = await self.transport.cancel(message.subject, message.id)
        except CnsTransportError as exc:
            return _Outcome(Status.QUEUED, error=str(exc), unanswered=True)
        return _judge(answer)

    # -- the retry budget spent: ask before giving up -----------------------------------

    async def _settle(self, message: Message, last: _Outcome) -> _Outcome:
        """The budget is spent: what the CNS's status lookup says, else ``unknown``."""
        try:
            answer = await self.transport.lookup(message.id)
        except CnsTransportError as exc:
            log.warning(
                "%s %s: retry budget spent and the CNS cannot say what became of it (%s)",
                message.operation,
                message.id,
                exc,
            )
            return _Outcome(
                Status.UNKNOWN,
                last.answer,
                f"{last.error}; the CNS may have booked it and could not be asked: do not "
                "send it again under a new UUID (the daemon asks the CNS until it says)",
            )
        return self._looked_up(answer, last)

    @staticmethod
    def _looked_up(answer: CnsAnswer | None, last: _Outcome) -> _Outcome:
        if answer is None:
            before = f"{last.error}; " if last.error else ""
            return _Outcome(
                Status.FAILED,
                last.answer,
                f"{before}the CNS has no record of it: it may be sent again",
                looked_up=True,
            )
        found = _judge(answer)
        if found.status == Status.QUEUED:  # processed, and refused for now: not booked
            found = _Outcome(Status.FAILED, answer, found.error)
        return _Outcome(found.status, answer, found.error, looked_up=True)

    def _look_up_unknown(self) -> None:
        """Now and then (and when the CNS is back) ask about the ``unknown`` messages."""
        busy = self._lookup_task is not None and not self._lookup_task.done()
        due = time.monotonic() - self._last_lookup >= self.lookup_seconds
        if busy or not due or self.outage_since is not None:
            return
        self._last_lookup = time.monotonic()
        self._lookup_task = asyncio.create_task(self._resolve_unknown(), name="cns-lookup")

    async def _resolve_unknown(self) -> None:
        try:
            for message in await self.outbox.run(self.outbox.unknown):
                try:
                    answer = await self.transport.lookup(message.id)
                except CnsTransportError as exc:
                    log.info("the CNS still cannot say what became of %s: %s", message.id, exc)
                    return  # the same for the others; next round
                await self._record(message, self._looked_up(answer, _Outcome(Status.UNKNOWN)))
        except Exception:  # a full disk, say: the next round tries again
            log.exception("could not settle the messages in state unknown")

    # -- outages -----------------------------------------------------------------------

    def _probe(self) -> None:
        """A delivery got no answer: probe the CNS until it answers (one prober)."""
        if self._stopping or (self._probe_task is not None and not self._probe_task.done()):
            return
        self._probe_task = asyncio.create_task(self._probe_until_back(), name="cns-probe")

    async def _probe_until_back(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.probe_seconds * (0.5 + self._rng.random()))
            try:
                await self.transport.probe()  # bounded by connect_timeout
            except CnsTransportError as exc:
                if self.outage_since is None:
                    self.outage_since = time.time()
                    log.warning(
                        "the CNS does not answer (%s): deliveries paused, probing every ~%g s",
                        exc,
                        self.probe_seconds,
                    )
                if not await self._anything_waiting():
                    # Nothing to resume: the next delivery finds out for itself.
                    self.outage_since = None
                    return
                continue
            break  # any answer: reachable (a 5xx is the retry schedule's business)
        if self.outage_since is None or self._stopping:
            return  # a blip: the next retry step comes soon enough
        down = time.time() - self.outage_since
        self.outage_since = None
        try:
            expedited = await self.outbox.run(self.outbox.expedite)
        except Exception:  # they go at their next retry step instead
            log.exception("could not bring the waiting CNS messages forward")
            expedited = 0
        log.info(
            "the CNS answers again after %.0f s: %d waiting message(s) sent now", down, expedited
        )
        self._last_lookup = 0.0  # and ask about the unknown ones
        self._wake.set()

    async def _anything_waiting(self) -> bool:
        try:
            due = await self.outbox.run(self.outbox.next_due)
            return due is not None or bool(await self.outbox.run(self.outbox.unknown))
        except Exception:  # cannot tell: keep probing
            return True

    # -- offline mode ------------------------------------------------------------------

    async def _upgrade_awaiting(self) -> None:
        if self.upgrader is None or time.monotonic() - self._last_upgrade_try < self.poll_seconds:
            return
        self._last_upgrade_try = time.monotonic()
        for message in await self.outbox.run(self.outbox.awaiting_timestamp):
            try:
                body, level = await self.upgrader(message.body or b"")
            except TimestampUnavailable as exc:
                log.info("fee note %s still awaiting a timestamp: %s", message.id, exc)
                return  # the TSA is down for all of them; try again later
            except Exception as exc:
                # Never upgradable (a revoked certificate, no XAdES signature to extend):
                # waiting longer will not help, and it must not hold the others back.
                error = f"cannot be upgraded to B-LT: {type(exc).__name__}: {exc}"
                log.warning("fee note %s %s", message.id, error)
                await self.outbox.run(
                    self.outbox.finish,
                    message.id,
                    Status.FAILED,
                    error=error,
                    event="cns.timestamp_upgrade",
                )
                self._count(message.operation, "failed")
                continue
            await self.outbox.run(self.outbox.timestamped, message.id, body, level)
            self._count(message.operation, "timestamped")

    def _count(self, operation: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.cns_message(str(operation), str(result))
