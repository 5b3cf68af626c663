"""Outbox accept rate: what "202 only after an fsynced commit" costs.

Measured in the same run, on the same disk (the temp directory, or the one given):

- ``outbox, synchronous=FULL``: :meth:`Outbox.enqueue_deposit` as the API calls it
  (idempotency lookup + insert, WAL, fsync at each commit) — what the daemon does;
- ``outbox via its thread, 8 concurrent``: the same through :meth:`Outbox.run`, as
  concurrent requests reach it (they queue on the outbox's one thread);
- baseline ``same schema, synchronous=NORMAL``: WAL without the per-commit fsync
  (durable against a process crash, not against a power cut);
- baseline ``bare INSERT, synchronous=OFF``: SQLite with no durability at all.

    .venv/bin/python bench/bench_outbox.py [N] [DIRECTORY]
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from stats import summarize, timed, timed_sync

from sidecar.cns.outbox import Outbox

BODY = b"<FeeNote>" + b"x" * 6000 + b"</FeeNote>"  # a signed fee note is a few kB


def _deposit(outbox: Outbox, digest: str) -> Callable[[], object]:
    """One deposit as the API makes it."""
    return lambda: outbox.enqueue_deposit(str(uuid.uuid4()), BODY, digest, client="bench")


def report(name: str, samples: list[float], wall: float) -> None:
    print(summarize(samples, wall).line(name))


def bench_outbox(directory: Path, n: int) -> None:
    outbox = Outbox(directory / "full.sqlite3")
    digest = hashlib.sha256(BODY).hexdigest()
    report("outbox, synchronous=FULL", *timed_sync(_deposit(outbox, digest), n))

    async def concurrent() -> None:
        async def one() -> None:
            await outbox.run(
                outbox.enqueue_deposit, str(uuid.uuid4()), BODY, digest, client="bench"
            )

        samples, wall = await timed(one, n=n, concurrency=8)
        report("outbox via its thread, 8 concurrent", samples, wall)

    asyncio.run(concurrent())
    outbox.close()


def bench_baseline(directory: Path, n: int, name: str, synchronous: str, schema: bool) -> None:
    db = sqlite3.connect(directory / f"{synchronous}.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    if schema:
        db.close()
        outbox = Outbox(directory / f"{synchronous}.sqlite3")
        outbox._db.execute(f"PRAGMA synchronous={synchronous}")
        digest = hashlib.sha256(BODY).hexdigest()
        report(name, *timed_sync(_deposit(outbox, digest), n))
        outbox.close()
        return
    db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, body BLOB)")
    insert = lambda: db.execute("INSERT INTO t VALUES (?, ?)", (str(uuid.uuid4()), BODY))  # noqa: E731
    report(name, *timed_sync(insert, n))
    db.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    base = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        directory = Path(tmp)
        print(f"{n} fee notes of {len(BODY)} bytes, one commit each, in {directory}")
        bench_outbox(directory, n)
        bench_baseline(directory, n, "baseline: same schema, sync=NORMAL", "NORMAL", True)
        bench_baseline(directory, n, "baseline: bare INSERT, sync=OFF", "OFF", False)


if __name__ == "__main__":
    main()
