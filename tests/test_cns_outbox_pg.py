"""The PostgreSQL outbox several daemons share: leases, concurrent claims, the schema's
version, and the audit journal's one chain in the same database.

Each ``PgOutbox`` here stands for one daemon (its own connection and lease owner), on
the test run's own PostgreSQL (tests/fixtures/postgres.py)."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from sidecar.audit_pg import PgAuditJournal
from sidecar.cns.outbox import Status
from sidecar.cns.outbox_pg import PgOutbox, lease_for
from sidecar.config import CnsSettings
from sidecar.stores import open_journal

UUID_A = "3f2b8c1e-6d4a-4b7e-9c2d-1a5e8f7b6c3d"


class Clock:
    """A clock the test moves (the lease's expiry), starting now."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_killed_daemons_lease_is_taken_over_after_expiry(pg_url: str, tmp_path: Path) -> None:
    clock = Clock()
    first = PgOutbox(pg_url, local_dir=tmp_path, lease_seconds=30, clock=clock)
    second = PgOutbox(pg_url, local_dir=tmp_path, lease_seconds=30, clock=clock)
    first.enqueue_deposit(UUID_A, b"<a/>", "d", client="c")
    claimed, _ = first.claim(10)
    assert [m.id for m in claimed] == [UUID_A]
    # The second daemon starts: it must not "recover" the first one's delivery.
    assert second.recover() == []
    assert second.claim(10) == ([], [])
    clock.now += 29
    assert second.claim(10) == ([], [])  # the lease holds
    clock.now += 2
    taken, _ = second.claim(10)
    assert [(m.id, m.attempts, m.body) for m in taken] == [(UUID_A, 2, b"<a/>")]
    # The first daemon answers late: its outcome is not recorded over the second's.
    late = first.finish(UUID_A, Status.QUEUED, retry_at=clock.now, error="timeout")
    assert late.status == Status.SENDING
    final = second.finish(UUID_A, Status.DELIVERED, answer_status=200)
    assert final.status == Status.DELIVERED and final.attempts == 2
    journal = open_journal(tmp_path / "unused.sqlite3", pg_url)
    try:
        assert isinstance(journal, PgAuditJournal)
        second.copy_events_to(journal)
        operations = [e.operation for e in journal.entries()]
        assert operations.count("cns.lease_expired") == 1
        assert operations.count("cns.deposit") == 1  # one outcome, the second daemon's
        assert journal.verify().ok
    finally:
        journal.close()
        first.close()
        second.close()


def test_an_unknown_message_is_settled_once_by_the_daemons_that_ask(
    pg_url: str, tmp_path: Path
) -> None:
    first = PgOutbox(pg_url, local_dir=tmp_path)
    second = PgOutbox(pg_url, local_dir=tmp_path)
    first.enqueue_deposit(UUID_A, b"<a/>", "d", client="c")
    first.claim(1)
    first.finish(UUID_A, Status.UNKNOWN, error="budget spent, the CNS could not be asked")
    # Both daemons ask the CNS (each its own round); the first answer recorded wins.
    assert second.finish(UUID_A, Status.DELIVERED, answer_status=200).status == "delivered"
    late = first.finish(UUID_A, Status.FAILED, error="no record")
    assert late.status == Status.DELIVERED
    first.close()
    second.close()


def test_a_deposit_upgraded_by_two_daemons_is_upgraded_once(pg_url: str, tmp_path: Path) -> None:
    first = PgOutbox(pg_url, local_dir=tmp_path)
    second = PgOutbox(pg_url, local_dir=tmp_path)
    first.enqueue_deposit(UUID_A, b"<b-b/>", "d", client="c", awaiting_timestamp=True)
    assert first.timestamped(UUID_A, b"<b-lt one/>", "B-LT").status == Status.QUEUED
    kept = second.timestamped(UUID_A, b"<b-lt two/>", "B-LT")  # too late: no error
    assert kept.status == Status.QUEUED
    assert second.get(UUID_A, with_body=True).body == b"<b-lt one/>"  # type: ignore[union-attr]
    first.close()
    second.close()


def test_requeue_on_stop_gives_back_only_this_daemons_deliveries(
    pg_url: str, tmp_path: Path
) -> None:
    first = PgOutbox(pg_url, local_dir=tmp_path)
    second = PgOutbox(pg_url, local_dir=tmp_path)
    first.enqueue_deposit(UUID_A, b"<a/>", "d", client="c")
    claimed, _ = first.claim(1)
    second.requeue([m.id for m in claimed])  # not its own: nothing happens
    assert first.get(UUID_A).status == Status.SENDING  # type: ignore[union-attr]
    first.requeue([m.id for m in claimed])
    assert first.get(UUID_A).status == Status.QUEUED  # type: ignore[union-attr]
    first.close()
    second.close()


def test_concurrent_claims_never_share_a_message(pg_url: str, tmp_path: Path) -> None:
    daemons = [PgOutbox(pg_url, local_dir=tmp_path) for _ in range(3)]
    for n in range(300):
        daemons[n % 3].enqueue_deposit(
            f"00000000-0000-4000-8000-{n:012d}", b"<a/>", f"d{n}", client="c"
        )
    start = threading.Barrier(3)

    def drain(outbox: PgOutbox) -> list[str]:
        start.wait()
        got: list[str] = []
        while True:
            claimed, _ = outbox.claim(7)
            if not claimed:
                return got
            got += [m.id for m in claimed]

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(drain, daemons))
    every = [uuid for got in results for uuid in got]
    assert len(every) == 300 and len(set(every)) == 300
    assert all(results)  # each daemon got some: they ran side by side
    for outbox in daemons:
        outbox.close()


def test_the_same_uuid_accepted_by_two_daemons_at_once_is_one_message(
    pg_url: str, tmp_path: Path
) -> None:
    daemons = [PgOutbox(pg_url, local_dir=tmp_path) for _ in range(4)]
    start = threading.Barrier(4)

    def accept(outbox: PgOutbox) -> bool:
        start.wait()
        return outbox.enqueue_deposit(UUID_A, b"<a/>", "d", client="c")[1]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        created = list(pool.map(accept, daemons))
    assert created.count(True) == 1
    assert daemons[0].counts() == {"queued": 1}
    for outbox in daemons:
        outbox.close()


def test_schema_is_versioned_and_a_newer_one_is_refused(pg_url: str, tmp_path: Path) -> None:
    PgOutbox(pg_url, local_dir=tmp_path).close()
    PgAuditJournal(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        versions = dict(conn.execute("SELECT component, version FROM schema_version").fetchall())
        assert versions == {"outbox": 1, "audit": 1}
        conn.execute("UPDATE schema_version SET version = 99 WHERE component = 'outbox'")
    with pytest.raises(Exception, match="newer than this sidecar knows"):
        PgOutbox(pg_url, local_dir=tmp_path)


def test_journal_appends_from_several_daemons_make_one_chain(pg_url: str) -> None:
    journals = [PgAuditJournal(pg_url) for _ in range(3)]

    def write(journal: PgAuditJournal) -> None:
        for n in range(40):
            journal.append("sign", "ok", client="c", detail={"n": n})

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        list(pool.map(write, journals))
    report = journals[0].verify()
    assert report.ok and report.entries == 120
    with psycopg.connect(pg_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("UPDATE entries SET outcome = 'forged' WHERE seq = 5")
        # Someone who can drop the trigger: verify names the entry.
        conn.execute("ALTER TABLE entries DISABLE TRIGGER entries_no_change")
        conn.execute("UPDATE entries SET outcome = 'forged' WHERE seq = 5")
    report = journals[1].verify()
    assert [(p.seq, p.problem) for p in report.problems] == [
        (5, "content changed (hash does not match)")
    ]
    for journal in journals:
        journal.close()


def test_audit_verify_cli_reads_the_postgresql_journal(pg_url: str, tmp_path: Path) -> None:
    journal = PgAuditJournal(pg_url)
    journal.append("sign", "ok", client="c")
    journal.close()
    config = tmp_path / "sidecar.toml"
    config.write_text(f'[cns]\noutbox = "{pg_url}"\n')
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "audit", "verify", "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "SIDECAR_HOME": str(tmp_path)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "audit journal OK: 1 entries" in result.stdout


def test_a_lost_server_is_storage_unavailable_and_reconnects(pg_url: str, tmp_path: Path) -> None:
    from sidecar.storage import StorageUnavailable

    outbox = PgOutbox(pg_url, local_dir=tmp_path)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'sidecar' AND pid <> pg_backend_pid()"
        )
    with pytest.raises(StorageUnavailable):
        outbox.enqueue_deposit(UUID_A, b"<a/>", "d", client="c")
    failure = outbox.health.failure
    assert failure is not None
    # /v1/health shows it to anyone: no server address (the log has libpq's words).
    assert "127.0.0.1" not in str(failure) and "cannot be reached" in str(failure)
    outbox.enqueue_deposit(UUID_A, b"<a/>", "d", client="c")  # reconnected
    assert outbox.health.failure is None
    outbox.close()


def test_lease_outlasts_one_delivery() -> None:
    settings = CnsSettings(connect_timeout=5, delivery_timeout=30)
    assert lease_for(settings) == 70
