"""The SQLite schema-migration runner, from an empty database and from the previous schema."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from sidecar.migrations import Migration, MigrationError, migrate, schema_version
from sidecar.sandbox.pki import SandboxPKI

V1 = Migration(
    1,
    "outbox table",
    """
    CREATE TABLE outbox (uuid TEXT PRIMARY KEY, body BLOB NOT NULL);
    CREATE INDEX outbox_body ON outbox (body);  -- a ';' in a comment;
    """,
)
V2 = Migration(
    2,
    "attempts and state",
    """
    ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE outbox ADD COLUMN state TEXT NOT NULL DEFAULT 'queued';
    """,
)


def backfill(connection: sqlite3.Connection) -> None:
    connection.execute("UPDATE outbox SET state = 'delivered' WHERE body = x'00'")


V3 = Migration(3, "mark old test rows delivered", backfill)


def test_new_database_gets_every_step(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "outbox.sqlite")
    result = migrate(connection, [V1, V2, V3], store="outbox")
    assert (result.from_version, result.to_version, result.applied) == (0, 3, (1, 2, 3))
    assert schema_version(connection) == 3
    assert migrate(connection, [V1, V2, V3], store="outbox").applied == ()


def test_upgrade_from_the_previous_schema_keeps_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    old = sqlite3.connect(path)  # what the previous release left behind
    migrate(old, [V1], store="outbox")
    old.execute("PRAGMA journal_mode=WAL")
    with old:
        old.executemany("INSERT INTO outbox VALUES (?, ?)", [("a", b"\x00"), ("b", b"<xml/>")])
    old.close()
    connection = sqlite3.connect(path)
    result = migrate(connection, [V1, V2, V3], store="outbox", backup=True)
    assert result.applied == (2, 3) and result.from_version == 1
    rows = dict(connection.execute("SELECT uuid, state FROM outbox").fetchall())
    assert rows == {"a": "delivered", "b": "queued"}
    assert result.backup is not None
    copy = sqlite3.connect(result.backup)
    assert schema_version(copy) == 1 and copy.execute("SELECT count(*) FROM outbox").fetchone() == (
        2,
    )


def test_failing_step_rolls_back_to_the_previous_version(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "s.sqlite")
    migrate(connection, [V1], store="s")
    bad = Migration(
        2, "half a step", "ALTER TABLE outbox ADD COLUMN x INTEGER; SELECT * FROM nope;"
    )
    with pytest.raises(MigrationError, match=r"migration 2 \(half a step\).*stays at version 1"):
        migrate(connection, [V1, bad], store="s")
    assert schema_version(connection) == 1
    columns = [row[1] for row in connection.execute("PRAGMA table_info(outbox)")]
    assert "x" not in columns  # the first half of the step was rolled back too
    assert migrate(connection, [V1, V2], store="s").applied == (2,)


def test_newer_database_is_refused(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "s.sqlite")
    migrate(connection, [V1, V2], store="journal")
    with pytest.raises(MigrationError, match="schema version 2, newer than this sidecar knows"):
        migrate(connection, [V1], store="journal")


def test_steps_must_be_numbered_in_order(tmp_path: Path) -> None:
    connection = sqlite3.connect(":memory:")
    with pytest.raises(MigrationError, match="numbered 1, 2, 3"):
        migrate(connection, [V2], store="s")


def test_two_processes_migrating_at_once_apply_each_step_once(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    calls: list[int] = []

    def counted(connection: sqlite3.Connection) -> None:
        calls.append(1)
        connection.execute("CREATE TABLE once (x)")  # fails if run twice

    steps = [V1, Migration(2, "once", counted)]
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate(sqlite3.connect(path, timeout=30), steps, store="s")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(calls) == 1
    assert schema_version(sqlite3.connect(path)) == 2


# ---- every store versions its schema with these steps


def _set_version(path: Path, version: int) -> None:
    """Play a database written by another release: same tables, another version."""
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {version}")
    connection.close()


def test_audit_journal_from_before_versioning_is_brought_to_the_current_schema(
    tmp_path: Path,
) -> None:
    from sidecar.audit import AuditJournal

    path = tmp_path / "audit.sqlite3"
    journal = AuditJournal(path)
    journal.append("sign", "ok", client="dr-x", digest="ab" * 32)
    journal.close()
    assert schema_version(sqlite3.connect(path)) == 2
    _set_version(path, 0)  # what a journal of the release before versioning holds
    journal = AuditJournal(path)
    assert [e.operation for e in journal.entries()] == ["sign"]
    assert journal.verify().ok
    journal.close()
    assert schema_version(sqlite3.connect(path)) == 2
    _set_version(path, 3)  # written by a newer sidecar: refused, not touched
    with pytest.raises(MigrationError, match="audit journal: the database has schema version 3"):
        AuditJournal(path)


async def test_revocation_cache_versions_its_schema(
    tmp_path: Path, sandbox_pki: SandboxPKI
) -> None:
    from sidecar.trust.anchors import load_certificates
    from sidecar.trust.revocation import RevocationCache

    root = load_certificates(sandbox_pki.roots_pem)[0]
    path = tmp_path / "revocation.sqlite3"
    cache = RevocationCache(path)
    await cache.open()
    await cache.keep_certificate(root)
    await cache.close()
    assert schema_version(sqlite3.connect(path)) == 2
    _set_version(path, 0)
    cache = RevocationCache(path)
    await cache.open()
    assert [c.dump() for c in cache.certificates()] == [root.dump()]  # kept across it
    await cache.close()
    assert schema_version(sqlite3.connect(path)) == 2
