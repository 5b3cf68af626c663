"""The audit journal: hash chain, tamper detection (direct SQL), CLI verify/export.

The tests taking ``location`` run on both journals: the SQLite file and the PostgreSQL
one that follows a shared outbox (tests/fixtures/postgres.py)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from sidecar.audit import AuditJournal
from sidecar.stores import open_journal


@pytest.fixture
def location(outbox_location: Callable[[str], Path | str]) -> Path | str:
    """Where a test's journal is: an SQLite file, or a PostgreSQL database's URL."""
    return outbox_location("audit.sqlite3")


def opened(location: Path | str) -> AuditJournal:
    return open_journal(Path(location), location)


def fill(path: Path | str, count: int = 5) -> None:
    journal = opened(path)
    for n in range(count):
        journal.append(
            "cns.deposit",
            "delivered",
            client="pms",
            uuid=f"u{n}",
            digest=f"d{n}",
            detail={"attempt": n},
        )
    journal.close()


def tamper(path: Path | str, *statements: str) -> None:
    if isinstance(path, str):  # someone with the database's owner role
        with psycopg.connect(path, autocommit=True) as conn:
            conn.execute("ALTER TABLE entries DISABLE TRIGGER USER")
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]
        return
    db = sqlite3.connect(path)
    # Someone with the file and a sqlite3 shell: the triggers are no obstacle to them.
    db.executescript(
        "DROP TRIGGER entries_no_update; DROP TRIGGER entries_no_delete;" + ";".join(statements)
    )
    db.commit()
    db.close()


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SIDECAR_HOME": str(home)},
    )


def test_intact_chain_verifies(location: Path | str) -> None:
    fill(location)
    journal = opened(location)
    report = journal.verify()
    entries = list(journal.entries())
    journal.close()
    assert report.ok and report.entries == 5
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert entries[2].detail == {"attempt": 2}


def test_the_daemon_cannot_rewrite_history(tmp_path: Path) -> None:
    fill(tmp_path / "audit.sqlite3")
    db = sqlite3.connect(tmp_path / "audit.sqlite3")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE entries SET outcome = 'rejected' WHERE seq = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM entries WHERE seq = 2")
    db.close()


@pytest.mark.parametrize(
    ("statements", "named", "problem"),
    [
        (["UPDATE entries SET outcome = 'rejected' WHERE seq = 3"], 3, "content changed"),
        (["UPDATE entries SET detail = '{\"attempt\": 9}' WHERE seq = 2"], 2, "content changed"),
        (["DELETE FROM entries WHERE seq = 2"], 3, "entries 2 removed"),
        (["DELETE FROM entries WHERE seq = 5"], 5, "newest entries removed"),
        # Reorder: entries 2 and 3 swap places (sequence numbers swapped, rest kept).
        (
            [
                "UPDATE entries SET seq = -2 WHERE seq = 2",
                "UPDATE entries SET seq = 2 WHERE seq = 3",
                "UPDATE entries SET seq = 3 WHERE seq = -2",
            ],
            2,
            "content changed",
        ),
    ],
)
def test_tampering_is_detected_and_named(
    location: Path | str, statements: list[str], named: int, problem: str
) -> None:
    fill(location)
    tamper(location, *statements)
    journal = opened(location)
    report = journal.verify()
    journal.close()
    assert not report.ok
    assert any(p.seq == named and problem in p.problem for p in report.problems), report


async def test_concurrent_async_appends_keep_one_chain(location: Path | str) -> None:
    journal = opened(location)
    await asyncio.gather(*(journal.append_async("op", "ok", uuid=str(n)) for n in range(50)))
    report = journal.verify()
    journal.close()
    assert report.ok and report.entries == 50


def test_cli_verify_names_the_altered_record(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    fill(home / "audit.sqlite3", 4)
    ok = cli(home, "audit", "verify")
    assert ok.returncode == 0 and "4 entries" in ok.stdout
    tamper(home / "audit.sqlite3", "UPDATE entries SET client = 'someone' WHERE seq = 2")
    bad = cli(home, "audit", "verify")
    assert bad.returncode == 1
    assert "entry 2: content changed" in bad.stdout


def test_cli_export_since(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    fill(home / "audit.sqlite3", 3)
    journal = AuditJournal(home / "audit.sqlite3")
    cut = list(journal.entries())[1].at
    journal.close()
    result = cli(home, "audit", "export", "--since", cut)
    assert result.returncode == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["seq"] for e in lines] == [2, 3]
    assert lines[0]["uuid"] == "u1" and lines[0]["hash"]
    assert cli(home, "audit", "export", "--since", "not a time").returncode == 2
