"""The outbox keeps each message's body last in its row (schema version 3).

A signed fee note is tens of KB (its PDF/A embedded): SQLite stores it on overflow
pages and walks them one by one to reach any column after it. Last in the row, the
body costs nothing to a status read or a list, which never ask for it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sidecar.cns import outbox as outbox_module
from sidecar.cns.outbox import Outbox, Status
from sidecar.migrations import migrate

BODY = b"<FeeNote>" + b"x" * 50_000 + b"</FeeNote>"


def _insert(db: sqlite3.Connection, uuid: str, status: str, body: bytes | None) -> None:
    db.execute(
        "INSERT INTO messages (id, operation, subject, client, digest, level, body, status, "
        "created_at, updated_at, next_attempt_at, answer_status, answer_body) "
        "VALUES (?, 'deposit', ?, 'dr-x', 'd', 'B-LT', ?, ?, 1.5, 2.5, 3.5, 200, x'3c6f6b2f3e')",
        (uuid, uuid, body, status),
    )


def test_a_new_outbox_has_the_body_last(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3")
    try:
        columns = [row[1] for row in outbox._db.execute("PRAGMA table_info(messages)")]
        assert columns[-1] == "body"
    finally:
        outbox.close()


def test_a_version_2_outbox_keeps_its_rows_bodies_and_sequence(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    old = sqlite3.connect(path)
    migrate(old, outbox_module._MIGRATIONS[:2], store="outbox")
    with old:
        _insert(old, "a", "delivered", BODY)
        _insert(old, "b", "queued", None)
        _insert(old, "c", "queued", b"<c/>")
        old.execute("DELETE FROM messages WHERE id = 'c'")  # its seq (3) is never reused
        before = old.execute(
            "SELECT seq, id, status, body, answer_body FROM messages ORDER BY seq"
        ).fetchall()
    old.close()

    outbox = Outbox(path)
    try:
        db = outbox._db
        assert db.execute("PRAGMA user_version").fetchone() == (3,)
        assert [row[1] for row in db.execute("PRAGMA table_info(messages)")][-1] == "body"
        after = db.execute(
            "SELECT seq, id, status, body, answer_body FROM messages ORDER BY seq"
        ).fetchall()
        assert after == before
        indexes = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")
        }
        assert {"one_cancel_per_note", "by_status", "by_update", "by_owner"} <= indexes
        message = outbox.get("a", with_body=True)
        assert message is not None and message.body == BODY
        assert message.status is Status.DELIVERED and message.answer_body == b"<ok/>"
        created, _ = outbox.enqueue_deposit("d", b"<d/>", "d2", client="dr-x")
        assert created.seq == 4
        assert db.execute(
            "SELECT count(*) FROM sqlite_sequence WHERE name = 'messages'"
        ).fetchone() == (1,)
    finally:
        outbox.close()
    assert (tmp_path / "o.sqlite3.v2.bak").exists()  # the copy taken before the step
