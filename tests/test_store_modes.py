"""Every SQLite store is private to the service's user: the outbox (patient identifiers),
the audit journal, the revocation cache, a migration's backup copy. Created 0600 with
their ``-wal``/``-shm``, whatever the umask; one left 0644 by an older version is
tightened when opened."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.audit import AuditJournal
from sidecar.cns.outbox import Outbox
from sidecar.trust.revocation import RevocationCache

SUFFIXES = ("", "-wal", "-shm")

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The umask of a careless service manager: files readable by everyone."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir() if p.is_file()}


async def open_every_store(directory: Path) -> None:
    outbox = Outbox(directory / "outbox.sqlite3")
    outbox.enqueue_deposit("n1", b"<a/>", "d", client="c")
    journal = AuditJournal(directory / "audit.sqlite3")
    journal.append("test", "ok")
    cache = RevocationCache(directory / "revocation.sqlite3")
    await cache.open()
    assert cache._db is not None
    cache._db.execute("INSERT INTO revinfo VALUES ('ocsp', 'k', 0, x'00', 'a', 'b', 'c')")
    # Checked while open: the -wal and -shm files exist only then.
    try:
        found = modes(directory)
        names = {f"{n}.sqlite3{s}" for n in ("outbox", "audit", "revocation") for s in SUFFIXES}
        assert names <= set(found)
        assert {name: mode for name, mode in found.items() if mode != 0o600} == {}
    finally:
        outbox.close()
        journal.close()
        await cache.close()


async def test_new_stores_are_created_0600(tmp_path: Path, open_umask: None) -> None:
    await open_every_store(tmp_path)


async def test_existing_stores_are_tightened_when_opened(tmp_path: Path, open_umask: None) -> None:
    older: list[sqlite3.Connection] = []
    for name in ("outbox", "audit", "revocation"):
        db = sqlite3.connect(tmp_path / f"{name}.sqlite3")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE leftover (x)")
        db.commit()
        older.append(db)  # left open: its -wal and -shm stay on disk
    for path in tmp_path.iterdir():
        path.chmod(0o644)
    assert len(modes(tmp_path)) == 9 and set(modes(tmp_path).values()) == {0o644}
    try:
        await open_every_store(tmp_path)
    finally:
        for db in older:
            db.close()


def test_a_migration_backup_is_private(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    outbox.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 1")  # as if the version 2 step had not run
    db.execute("DROP INDEX by_owner")
    db.execute("DROP TABLE events")
    db.execute("DROP TABLE meta")
    db.commit()
    db.close()
    Outbox(path).close()
    backup = tmp_path / "outbox.sqlite3.v1.bak"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
