"""Reads of the SQLite outbox do not queue behind its writes.

Every write (a deposit's accept, a delivery's outcome, the journal's copy) commits on
the outbox's one thread with an fsync (``synchronous=FULL``). A status read or a list
used to wait there behind all of them; under WAL it has a connection and a thread of
its own (:meth:`Outbox.read`), and sees what was committed before it started.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from sidecar.cns.outbox import Outbox, Status

UUID_A = "3f2b8c1e-6d4a-4b7e-9c2d-1a5e8f7b6c3d"

#: A bound so that a broken build fails instead of hanging; never a latency figure.
HANG = 60.0


async def test_a_read_is_answered_while_a_write_transaction_is_open(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3")
    try:
        outbox.enqueue_deposit(UUID_A, b"<a/>", "d", client="c")
        inside, release = threading.Event(), threading.Event()

        def slow_write() -> None:
            """A write that holds the outbox's thread, its lock and an open transaction
            (as a commit waiting on a slow disk does)."""
            with outbox._transaction():
                outbox._db.execute("UPDATE messages SET status = 'sending' WHERE id = ?", (UUID_A,))
                inside.set()
                release.wait(HANG)

        writing = asyncio.ensure_future(outbox.run(slow_write))
        try:
            assert await asyncio.to_thread(inside.wait, HANG)
            message = await asyncio.wait_for(outbox.read(outbox.get, UUID_A), HANG)
            listed = await asyncio.wait_for(outbox.read(outbox.list), HANG)
            counts = await asyncio.wait_for(outbox.read(outbox.counts), HANG)
            assert not writing.done()  # all answered while the write was still open
        finally:
            release.set()
            await writing
        # What was committed before the read: not the write in progress.
        assert message is not None and message.status == Status.QUEUED
        assert [(m.id, m.status) for m in listed] == [(UUID_A, Status.QUEUED)]
        assert counts == {"queued": 1}
        # Once committed, the next read sees it.
        after = await outbox.read(outbox.get, UUID_A)
        assert after is not None and after.status == Status.SENDING
    finally:
        outbox.close()


async def test_the_reader_cannot_write(tmp_path: Path) -> None:
    """The reading connection is query-only: a write through it is refused, and the
    read falls back to the writer's connection."""
    outbox = Outbox(tmp_path / "o.sqlite3")
    try:

        def write_on_this_thread() -> int:
            outbox._db.execute("UPDATE meta SET value = value WHERE key = 'probe'")
            return threading.get_ident()

        writer_thread = await outbox.run(threading.get_ident)
        # The reader refuses (query_only); the call is done again on the writer's thread.
        assert await outbox.read(write_on_this_thread) == writer_thread
    finally:
        outbox.close()


UUID_B = "7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"


async def test_a_point_read_is_answered_on_the_calling_thread(tmp_path: Path) -> None:
    """A status read by UUID runs on the caller's own read-only connection, not behind
    the reading thread (here held busy); afterwards this thread writes as before."""
    outbox = Outbox(tmp_path / "o.sqlite3")
    release = threading.Event()
    try:
        outbox.enqueue_deposit(UUID_A, b"<a/>", "d", client="c")
        busy = asyncio.ensure_future(outbox.read(release.wait, HANG))
        try:
            message = await asyncio.wait_for(outbox.read_point(outbox.get, UUID_A), HANG)
            assert message is not None and message.id == UUID_A
            assert await outbox.read_point(outbox.get, UUID_A, owner="someone else") is None
        finally:
            release.set()
            await busy
        # The read-only connection was this thread's for the read only.
        created, _ = outbox.enqueue_deposit(UUID_B, b"<b/>", "d", client="c")
        assert created.status is Status.QUEUED
    finally:
        outbox.close()


async def test_a_point_read_that_fails_here_is_done_by_the_reading_thread(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3")
    try:

        def write_here() -> int:
            outbox._db.execute("UPDATE meta SET value = value WHERE key = 'probe'")
            return threading.get_ident()

        # Refused on this thread's query-only connection, then on the reading
        # thread's; the writer's thread does it.
        assert await outbox.read_point(write_here) == await outbox.run(threading.get_ident)
    finally:
        outbox.close()
