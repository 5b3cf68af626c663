"""Three real daemons on one PostgreSQL outbox, two of them killed with ``kill -9``.

Three ``sidecar serve`` processes (each its own home and port) share the outbox and
the audit journal in one PostgreSQL database (the test run's own cluster) and forward
to one CNS simulator served on loopback from the test process (it outlives every
daemon and counts what the CNS would have booked). 1,000 signed fee notes are
deposited, spread over the three, by three clients at once; a client whose daemon
dies under it sends the same note to another daemon (same UUID: accepted once).
Two daemons are killed at random moments, each while it has deliveries under way,
then restarted: every note is delivered and booked exactly once, the deliveries the
dead daemons held are taken over once their lease ran out, and no message was ever
sent by two daemons at once (each extra sending is a takeover or a retry, journaled).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import random
import signal
import threading
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path

import psycopg

from sidecar.audit_pg import PgAuditJournal
from tests.fixtures.cns import FeeNotes, SimulatorThread
from tests.fixtures.daemon import DaemonProcess
from tests.test_cns_crash import post_note, write_config

NOTES = 1000
DAEMONS = 3


def deposits(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, status FROM messages WHERE operation = 'deposit'")
        return dict(rows.fetchall())


def sending_by(url: str, pid: int) -> int:
    """Deliveries the daemon with this process id holds right now."""
    with psycopg.connect(url) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM messages WHERE status = 'sending' AND lease_owner LIKE %s",
            (f"%:{pid}:%",),
        ).fetchone()  # type: ignore[misc]
        return int(count)


class Cluster:
    """The three daemons; a killed one is ``None`` until restarted."""

    def __init__(self, start: Callable[[int], DaemonProcess]) -> None:
        self._start = start
        self._lock = threading.Lock()
        self.daemons: list[DaemonProcess | None] = [None] * DAEMONS

    def start_all(self) -> None:
        """All three at once (each makes its sandbox first: the slow part)."""
        with concurrent.futures.ThreadPoolExecutor(DAEMONS) as pool:
            self.daemons = list(pool.map(self._start, range(DAEMONS)))

    def alive(self, preferred: int) -> list[DaemonProcess]:
        with self._lock:
            order = [*range(preferred, DAEMONS), *range(preferred)]
            return [d for n in order if (d := self.daemons[n]) is not None]

    def kill(self, n: int) -> None:
        with self._lock:
            daemon = self.daemons[n]
            self.daemons[n] = None
        assert daemon is not None
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait(10)

    def restart(self, n: int) -> None:
        daemon = self._start(n)
        with self._lock:
            self.daemons[n] = daemon


def deposit_all(cluster: Cluster, share: list[tuple[str, bytes]], home: int) -> set[str]:
    """Post each note to this client's daemon, or to another one while it is down."""
    accepted: set[str] = set()
    for note_uuid, body in share:
        deadline = time.monotonic() + 120
        while note_uuid not in accepted:
            assert time.monotonic() < deadline, f"{note_uuid} never accepted"
            for daemon in cluster.alive(home):
                try:
                    status = post_note(daemon, body)
                except (urllib.error.URLError, http.client.HTTPException, OSError):
                    continue  # killed under us: the next daemon gets the same note
                assert status in (202, 503), status  # 503: its store is briefly away
                if status == 202:
                    accepted.add(note_uuid)
                    break
            else:
                time.sleep(0.2)  # none up (a restart under way)
    return accepted


def test_three_daemons_one_postgresql_outbox_two_killed(
    tmp_path: Path,
    pg_url: str,
    daemon_factory: Callable[..., DaemonProcess],
    cns_simulator: SimulatorThread,
    fee_notes: FeeNotes,
) -> None:
    simulator = cns_simulator.simulator
    simulator.faults.latency = 0.05  # deliveries take a while: kills land mid-delivery
    configs = [
        write_config(
            tmp_path / f"sidecar-{n}.toml",
            cns_simulator.url,
            outbox=pg_url,
            connect_timeout=1.0,
            delivery_timeout=5.0,  # a lease of 2 * (1 + 5) = 12 s
        )
        for n in range(DAEMONS)
    ]

    def start(n: int) -> DaemonProcess:
        return daemon_factory(tmp_path / f"home-{n}", "--sandbox", "--config", str(configs[n]))

    cluster = Cluster(start)
    starting = threading.Thread(target=cluster.start_all, name="starting")
    starting.start()
    notes = [fee_notes.make() for _ in range(NOTES)]  # signed meanwhile
    starting.join(300)
    assert all(cluster.daemons)
    shares = [notes[n::DAEMONS] for n in range(DAEMONS)]
    rng = random.Random()
    accepted: list[set[str]] = [set() for _ in range(DAEMONS)]
    clients = [
        threading.Thread(
            target=lambda n=n: accepted[n].update(deposit_all(cluster, shares[n], n)),
            name=f"client-{n}",
        )
        for n in range(DAEMONS)
    ]
    started = time.monotonic()
    for client in clients:
        client.start()

    # Two daemons killed at random moments, each while it holds deliveries.
    killed = 0
    for victim in rng.sample(range(DAEMONS), 2):
        time.sleep(rng.uniform(0.5, 4.0))
        deadline = time.monotonic() + 60
        daemon = cluster.daemons[victim]
        assert daemon is not None
        while sending_by(pg_url, daemon.process.pid) == 0:
            assert time.monotonic() < deadline, "the daemon never had a delivery under way"
            time.sleep(0.01)
        cluster.kill(victim)
        killed += 1
        time.sleep(rng.uniform(0.2, 1.5))
        cluster.restart(victim)
    for client in clients:
        client.join(300)
        assert not client.is_alive()
    every = set().union(*accepted)
    assert len(every) == NOTES
    assert killed == 2

    deadline = time.monotonic() + 180
    while True:
        state = deposits(pg_url)
        if set(state) == every and set(state.values()) == {"delivered"}:
            break
        assert time.monotonic() < deadline, {
            s: list(state.values()).count(s) for s in set(state.values())
        }
        time.sleep(0.5)
    elapsed = time.monotonic() - started

    # Each booked exactly once, all of them.
    assert set(simulator.booking_counts) == every
    assert set(simulator.booking_counts.values()) == {1}
    # The killed daemons' deliveries were taken over after their leases ran out, and
    # no message went out twice except by a takeover or a retry (never two claims).
    journal = PgAuditJournal(pg_url)
    try:
        for daemon in cluster.alive(0):
            assert daemon.stop() == 0  # (a clean stop moves the last events)
        report = journal.verify()
        assert report.ok, report.problems
        entries = list(journal.entries())
    finally:
        journal.close()
    takeovers = sum(1 for e in entries if e.operation == "cns.lease_expired")
    retries = sum(1 for e in entries if e.operation == "cns.deposit" and e.outcome == "queued")
    assert takeovers >= 1
    extra_sendings = sum(count - 1 for key, count in simulator.requests.items() if key in every)
    assert extra_sendings <= takeovers + retries
    delivered = [
        e.uuid for e in entries if e.operation == "cns.deposit" and e.outcome == "delivered"
    ]
    assert sorted(delivered) == sorted(every)  # one delivery outcome each, in one chain
    print(
        f"\n{NOTES} notes over {DAEMONS} daemons, 2 killed: delivered in {elapsed:.1f} s; "
        f"{takeovers} lease takeovers, {retries} retries, {extra_sendings} extra sendings"
    )
