"""Outbox accept rate: what "202 only after an fsynced commit" costs.

Measured in the same run, on the same disk (the temp directory, or the one given):

- ``outbox, synchronous=FULL``: :meth:`Outbox.enqueue_deposit` as the API calls it
  (idempotency lookup + insert, WAL, fsync at each commit) — what the daemon does;
- ``outbox via its thread, 8 concurrent``: the same through :meth:`Outbox.run`, as
  concurrent requests reach it (they queue on the outbox's one thread);
- baseline ``same schema, synchronous=NORMAL``: WAL without the per-commit fsync
  (durable against a process crash, not against a power cut);
- baseline ``bare INSERT, synchronous=OFF``: SQLite with no durability at all.

``--shared``: the shared outbox instead, accepts/s and deliveries/s
for 1, 2 and 3 daemons on one PostgreSQL on loopback (a cluster of our own, as the
tests start it: tests/fixtures/postgres.py), next to the SQLite outbox's figures in the
same run. A "daemon" is a process with what a daemon has: its outbox store (one
connection, one thread: accepts are serialized per daemon, as the API's are) and, for
deliveries, the real delivery worker (``[cns] workers = 4``) and CNS transport,
forwarding to one CNS simulator in its own process. Accepts: each daemon deposits
N/k notes, the rate is all of them over the wall time from a common start.
Deliveries: N notes queued beforehand, the rate is N over the time until the last one
is ``delivered``.

    .venv/bin/python bench/bench_outbox.py [N] [DIRECTORY]
    .venv/bin/python bench/bench_outbox.py --shared [N]
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from stats import free_port, summarize, timed, timed_sync

from sidecar.cns.outbox import Outbox
from sidecar.stores import open_outbox

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


# -- the shared outbox: 1, 2, 3 daemons on one PostgreSQL ----------------------------


def _note(note_uuid: str) -> bytes:
    return f"<FeeNote><UUID>{note_uuid}</UUID>".encode() + BODY + b"</FeeNote>"


def _accepting(location: str, n: int, ready: Any, go: Event, results: Any) -> None:
    """One daemon's accepts: *n* deposits in a row on its store (a child process)."""
    outbox = open_outbox(location)
    notes = [(u, _note(u)) for u in (str(uuid.uuid4()) for _ in range(n))]
    ready.put(1)
    go.wait()
    started = time.perf_counter()
    samples = []
    for note_uuid, body in notes:
        t = time.perf_counter()
        outbox.enqueue_deposit(note_uuid, body, hashlib.sha256(body).hexdigest(), client="b")
        samples.append(time.perf_counter() - t)
    results.put((started, time.perf_counter(), samples))
    outbox.close()


def _delivering(location: str, cns_url: str, ready: Any, go: Event, stop: Event) -> None:
    """One daemon's delivery worker and transport, until *stop* (a child process)."""
    import aiohttp

    from sidecar.cns.transport import CnsTransport
    from sidecar.cns.worker import DeliveryWorker
    from sidecar.config import CnsSettings

    async def run() -> None:
        settings = CnsSettings(backoff_initial=0.05, backoff_max=0.5)
        outbox = open_outbox(location, settings=settings)
        async with aiohttp.ClientSession() as session:
            worker = DeliveryWorker(outbox, CnsTransport(settings, cns_url, session), settings)
            ready.put(1)
            await asyncio.to_thread(go.wait)
            await worker.start()
            await asyncio.to_thread(stop.wait)
            await worker.stop()
        outbox.close()

    asyncio.run(run())


def _simulating(port: int, stop: Event) -> None:
    """The CNS simulator in a process of its own (accepts any signature)."""
    from sidecar.cns.simulator import CnsSimulator, serve_simulator

    async def run() -> None:
        async with serve_simulator(CnsSimulator(verifier=lambda _body: []), port=port):
            await asyncio.to_thread(stop.wait)

    asyncio.run(run())


def _delivered(location: str) -> int:
    outbox = open_outbox(location)
    try:
        return outbox.counts().get("delivered", 0)
    finally:
        outbox.close()


def shared_accepts(location: str, k: int, n: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    ready, go, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    processes = [
        ctx.Process(target=_accepting, args=(location, n // k, ready, go, results))
        for _ in range(k)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=120)
    go.set()
    outcomes = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    wall = max(o[1] for o in outcomes) - min(o[0] for o in outcomes)
    samples = [s for o in outcomes for s in o[2]]
    print(summarize(samples, wall).line(f"  accepts, {k} daemon(s)"))
    return len(samples) / wall


def shared_deliveries(location: str, cns_url: str, k: int, n: int) -> float:
    filler = open_outbox(location)
    for _ in range(n):
        note_uuid = str(uuid.uuid4())
        body = _note(note_uuid)
        filler.enqueue_deposit(note_uuid, body, hashlib.sha256(body).hexdigest(), client="b")
    filler.close()
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    ready, go = ctx.Queue(), ctx.Event()
    processes = [
        ctx.Process(target=_delivering, args=(location, cns_url, ready, go, stop)) for _ in range(k)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=120)
    go.set()
    started = time.perf_counter()
    while _delivered(location) < n:
        time.sleep(0.05)
    wall = time.perf_counter() - started
    stop.set()
    for process in processes:
        process.join(60)
    print(f"  deliveries, {k} daemon(s): {n} in {wall:.2f} s = {n / wall:.0f}/s")
    return n / wall


def bench_shared(n: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.fixtures.postgres import start_postgres

    server = start_postgres()
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    port = free_port()
    simulator = ctx.Process(target=_simulating, args=(port, stop))
    simulator.start()
    cns_url = f"http://127.0.0.1:{port}"
    time.sleep(2)  # the simulator's start
    table: list[tuple[str, float, float]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"shared outbox: {n} fee notes per figure, CNS simulator at {cns_url}")
            sqlite_path = str(Path(tmp) / "outbox.sqlite3")
            print("SQLite (one daemon: the file is not shared)")
            accepts = shared_accepts(sqlite_path, 1, n)
            Path(sqlite_path).unlink()
            deliveries = shared_deliveries(str(Path(tmp) / "deliver.sqlite3"), cns_url, 1, n)
            table.append(("SQLite, 1 daemon", accepts, deliveries))
            for k in (1, 2, 3):
                print(f"PostgreSQL (loopback), {k} daemon(s)")
                accepts = shared_accepts(server.create_database(), k, n)
                deliveries = shared_deliveries(server.create_database(), cns_url, k, n)
                table.append((f"PostgreSQL, {k} daemon(s)", accepts, deliveries))
    finally:
        stop.set()
        simulator.join(30)
        server.stop()
    print(f"\n{'store':<24} {'accepts/s':>10} {'deliveries/s':>13}")
    for name, accepts, deliveries in table:
        print(f"{name:<24} {accepts:>10.0f} {deliveries:>13.0f}")


def main() -> None:
    if "--shared" in sys.argv:
        args = [a for a in sys.argv[1:] if a != "--shared"]
        bench_shared(int(args[0]) if args else 600)
        return
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
