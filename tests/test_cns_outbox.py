"""The outbox and the worker without HTTP in front: durability settings, recovery,
ordering, backoff. (The offline mode, with a real TSA going down: test_cns_offline.py.)

The tests taking ``outbox_location`` run against both stores: the SQLite file and
the PostgreSQL database (tests/fixtures/postgres.py); the leases of the shared store
are tested in test_cns_outbox_pg.py."""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sidecar.cns.outbox import DuplicateUuid, InvalidState, Outbox, Status
from sidecar.cns.worker import backoff_delay
from sidecar.config import CnsSettings
from sidecar.stores import open_outbox

UUID_A = "3f2b8c1e-6d4a-4b7e-9c2d-1a5e8f7b6c3d"
UUID_B = "9a1c7e2b-4f3d-4e8a-b6c5-2d9f0e1a3b4c"

Location = Callable[[str], "Path | str"]


def test_wal_and_full_synchronous(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3")
    try:
        assert outbox._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert outbox._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    finally:
        outbox.close()


def test_idempotent_enqueue(outbox_location: Location) -> None:
    outbox = open_outbox(outbox_location("o.sqlite3"))
    first, created = outbox.enqueue_deposit(UUID_A, b"<a/>", "d1", client="c")
    again, created_again = outbox.enqueue_deposit(UUID_A, b"<a/>", "d1", client="c")
    assert created and not created_again and again.seq == first.seq
    with pytest.raises(DuplicateUuid):
        outbox.enqueue_deposit(UUID_A, b"<b/>", "d2", client="c")
    outbox.close()


def test_recover_puts_sending_rows_back_with_the_same_uuid(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(path)
    outbox.enqueue_deposit(UUID_A, b"<a/>", "d", client="c")
    claimed, _ = outbox.claim(10)
    assert [m.id for m in claimed] == [UUID_A] and claimed[0].body == b"<a/>"
    outbox._db.close()  # a crash: no finish(), no close()

    reopened = Outbox(path)
    assert reopened.get(UUID_A).status == Status.SENDING  # type: ignore[union-attr]
    assert reopened.recover() == [UUID_A]
    again, _ = reopened.claim(10)
    assert [m.id for m in again] == [UUID_A] and again[0].attempts == 2
    reopened.close()


def test_cancel_waits_for_its_deposit(outbox_location: Location) -> None:
    outbox = open_outbox(outbox_location("o.sqlite3"))
    outbox.enqueue_deposit(UUID_A, b"<a/>", "d", client="c")
    outbox.enqueue_cancel(UUID_A, UUID_B, client="c")
    claimed, _ = outbox.claim(10)
    assert [m.id for m in claimed] == [UUID_A]  # not the cancellation
    outbox.finish(UUID_A, Status.QUEUED, retry_at=0.0, error="503")
    claimed, _ = outbox.claim(10)
    assert [m.id for m in claimed] == [UUID_A]  # still not, the deposit is not final
    outbox.finish(UUID_A, Status.DELIVERED, answer_status=200)
    claimed, _ = outbox.claim(10)
    assert [(m.id, m.operation) for m in claimed] == [(UUID_B, "cancel")]
    outbox.close()


def test_cancel_of_a_failed_deposit_is_never_sent(outbox_location: Location) -> None:
    outbox = open_outbox(outbox_location("o.sqlite3"))
    outbox.enqueue_deposit(UUID_A, b"<a/>", "d", client="c")
    outbox.enqueue_cancel(UUID_A, UUID_B, client="c")
    outbox.claim(1)
    outbox.finish(UUID_A, Status.FAILED, error="budget spent")
    claimed, closed = outbox.claim(10)
    assert claimed == [] and [m.id for m in closed] == [UUID_B]
    assert outbox.get(UUID_B).status == Status.FAILED  # type: ignore[union-attr]
    with pytest.raises(InvalidState):
        outbox.enqueue_cancel(UUID_A, "e3d1b2c4-5a6f-4b7c-8d9e-0f1a2b3c4d5e", client="c")
    # The operator's retry: a fresh budget.
    assert outbox.retry(UUID_A).status == Status.QUEUED
    outbox.close()


def test_backoff_grows_and_is_capped_and_jittered() -> None:
    settings = CnsSettings(backoff_initial=1, backoff_factor=2, backoff_max=30, backoff_jitter=0.5)
    rng = random.Random(1)
    delays = [backoff_delay(n, settings, rng) for n in range(1, 9)]
    bases = [1, 2, 4, 8, 16, 30, 30, 30]
    assert all(b / 2 <= d <= b for d, b in zip(delays, bases, strict=True))
    assert len({round(d, 6) for d in delays[-3:]}) == 3  # jittered, not in step
    assert backoff_delay(3, dataclasses.replace(settings, backoff_jitter=0), rng) == 4


def test_cli_list_and_retry(tmp_path: Path, outbox_location: Location) -> None:
    location = outbox_location("outbox.sqlite3")
    outbox = open_outbox(location)
    outbox.enqueue_deposit(UUID_A, b"<a/>", "d", client="c")
    outbox.claim(1)
    outbox.finish(UUID_A, Status.FAILED, error="CNS answered 500")
    outbox.close()
    env = {**os.environ, "SIDECAR_HOME": str(tmp_path)}
    config = tmp_path / "sidecar.toml"
    config.write_text(f'[cns]\noutbox = "{location}"\n')

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "sidecar",
                "outbox",
                *args[:1],
                "--config",
                str(config),
                *args[1:],
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    listed = cli("list", "--status", "failed")
    assert UUID_A in listed.stdout and "CNS answered 500" in listed.stdout
    assert cli("retry", UUID_A).returncode == 0
    assert cli("retry", UUID_A).returncode == 1  # queued now, not failed
    reopened = open_outbox(location)
    message = reopened.get(UUID_A)
    assert message is not None and (message.status, message.attempts) == ("queued", 0)
    reopened.close()
