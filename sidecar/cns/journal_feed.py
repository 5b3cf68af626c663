"""The outbox's state changes into the audit journal, each exactly once.

The outbox writes the journal event of each state change in the same transaction as
the change (``events`` table); this module copies them into the journal with
:meth:`AuditJournal.import_events`, which records in the same journal transaction how
far it got. So whatever kills the process, and whenever the journal's disk refuses a
write, every outbox state has its journal entry, at the latest after the next copy:
right after each change (:meth:`Outbox.run` kicks the feed, which copies in the
background: the caller does not wait for a second fsync), every :data:`POLL_SECONDS`
(events written by ``sidecar outbox retry`` or left by a crash or a full disk), at
start and at stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ..audit import AuditJournal
from ..storage import StorageUnavailable
from .outbox import Outbox

__all__ = ["POLL_SECONDS", "JournalFeed", "copy_events"]

log = logging.getLogger("sidecar.cns.journal")

POLL_SECONDS = 2.0
_BATCH = 500


def copy_events(outbox: Outbox, journal: AuditJournal) -> tuple[int, int]:
    """Copy every outbox event the journal lacks; ``(copied, last seq held)``. Blocking."""
    return outbox.copy_events_to(journal, _BATCH)


class JournalFeed:
    """Keeps the journal up with one outbox, in the daemon."""

    def __init__(
        self, outbox: Outbox, journal: AuditJournal, *, poll_seconds: float = POLL_SECONDS
    ) -> None:
        self.outbox = outbox
        self.journal = journal
        self.poll_seconds = poll_seconds
        self._lock = asyncio.Lock()
        self._kicked = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._held = 0
        self._pruned = 0
        self._failing = False

    async def start(self) -> None:
        """Copy what a crash left behind, then keep copying; outbox changes call back."""
        await self.flush()
        self.outbox.on_events = self._kicked.set
        self._task = asyncio.create_task(self._poll(), name="journal-feed")

    async def stop(self) -> None:
        # A flag, not a cancellation: Python 3.11's wait_for can lose a cancellation that
        # lands as the event it waits on is set (as every outbox change sets it).
        self.outbox.on_events = None
        self._stopping = True
        self._kicked.set()
        if self._task is not None:
            await self._task
        await self.flush()

    async def flush(self) -> None:
        """Copy now. A journal that cannot write is left for the next try: the events
        wait in the outbox, nothing is lost."""
        async with self._lock:
            try:
                copied, self._held = await asyncio.to_thread(copy_events, self.outbox, self.journal)
            except StorageUnavailable as exc:
                if not self._failing:
                    log.warning("outbox events wait for the audit journal: %s", exc)
                self._failing = True
                return
            if self._failing:
                log.info("audit journal writable again: %d outbox events copied", copied)
            self._failing = False

    async def _poll(self) -> None:
        last_prune = time.monotonic()
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._kicked.wait()
            if self._stopping:
                return
            self._kicked.clear()
            try:
                await self.flush()
                if self._held > self._pruned and time.monotonic() - last_prune > self.poll_seconds:
                    last_prune = time.monotonic()
                    await self.outbox.run(self.outbox.prune_events, self._held)
                    self._pruned = self._held
            except StorageUnavailable:
                pass  # the prune waits for a disk that takes writes; nothing depends on it
            except Exception:  # the feed must outlive a bad moment
                log.exception("copying outbox events to the audit journal failed")
