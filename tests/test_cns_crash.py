"""Accepted means durable: a real ``sidecar serve --sandbox`` killed and restarted.

The simulator runs in the test process (its own thread), so it outlives every daemon
and counts what the CNS would have booked.

The kill and stop tests run on both outbox stores (``store``): the SQLite file in the
daemon's home, and PostgreSQL (tests/fixtures/postgres.py), where what a killed daemon
was sending is taken over once its lease has run out (short timeouts: a lease of 8 s).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.cns import FeeNotes, SimulatorThread, unsigned_fee_note
from tests.fixtures.daemon import DaemonProcess
from tests.fixtures.sandbox import free_port


def write_config(path: Path, url: str, **cns: object) -> Path:
    lines = [
        "[sandbox]",
        f"port = {free_port()}",
        f"cns_port = {free_port()}",
        "[cns]",
        'environment = "sandbox"',
        "backoff_initial = 0.05",
        "backoff_max = 0.5",
        "workers = 4",
        *(f"{key} = {json.dumps(value)}" for key, value in cns.items()),
        "[cns.base_urls]",
        f'sandbox = "{url}"',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def post_note(daemon: DaemonProcess, body: bytes) -> int:
    request = urllib.request.Request(
        daemon.base_url + "/v1/cns/fee-notes",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {daemon.token}", "Content-Type": "application/xml"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def statuses(home: Path | str) -> dict[str, str]:
    """The outbox as a crashed daemon left it: the SQLite file in *home* (read-only;
    WAL lets us read anyway), or the PostgreSQL database at this URL."""
    query = "SELECT id, status FROM messages WHERE operation = 'deposit'"
    if isinstance(home, str):
        with psycopg.connect(home) as conn:
            return dict(conn.execute(query).fetchall())
    db = sqlite3.connect(f"file:{home / 'outbox.sqlite3'}?mode=ro", uri=True)
    try:
        return dict(db.execute(query))
    finally:
        db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> dict[str, object]:
    """The ``[cns]`` settings of each outbox store (none: the SQLite default)."""
    if request.param == "sqlite":
        return {}
    url = request.getfixturevalue("pg_url")
    return {"outbox": url, "connect_timeout": 1.0, "delivery_timeout": 3.0}


def where(store: dict[str, object], home: Path) -> Path | str:
    """Where :func:`statuses` reads the outbox of a daemon with these settings."""
    outbox = store.get("outbox")
    return outbox if isinstance(outbox, str) else home


def wait_all_delivered(
    home: Path | str, expected: set[str], timeout: float = 120
) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    current: dict[str, str] = {}
    while time.monotonic() < deadline:
        current = statuses(home)
        if set(current) == expected and set(current.values()) == {"delivered"}:
            return current
        time.sleep(0.2)
    counts = {s: list(current.values()).count(s) for s in set(current.values())}
    raise AssertionError(f"not all delivered: {counts}")


def test_kill_9_mid_delivery_loses_nothing_and_books_once(
    tmp_path: Path,
    store: dict[str, object],
    daemon_factory: Callable[..., DaemonProcess],
    cns_simulator: SimulatorThread,
    fee_notes: FeeNotes,
) -> None:
    simulator = cns_simulator.simulator
    # Slow enough that kills land mid-delivery; a third of the connections dropped after
    # the CNS booked the note, so the daemon cannot know and must send it again.
    simulator.faults.latency = 0.05
    simulator.faults.drop_probability = 0.3
    config = write_config(tmp_path / "sidecar.toml", cns_simulator.url, **store)
    home = tmp_path / "home"
    outbox = where(store, home)
    notes = [fee_notes.make() for _ in range(200)]
    accepted: set[str] = set()
    caught_sending = 0
    for batch in (notes[:70], notes[70:140], notes[140:]):
        daemon = daemon_factory(home, "--sandbox", "--config", str(config))
        for note_uuid, body in batch:
            assert post_note(daemon, body) == 202
            accepted.add(note_uuid)
        time.sleep(0.3)  # let the workers get going
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait(10)
        left = statuses(outbox)
        assert set(left) == accepted  # every 202 is on disk
        caught_sending += list(left.values()).count("sending")
    # The kills did interrupt deliveries (otherwise this test would prove nothing).
    assert caught_sending > 0
    assert simulator.dropped > 0
    daemon = daemon_factory(home, "--sandbox", "--config", str(config))
    wait_all_delivered(outbox, accepted)
    assert len(simulator.bookings) == 200
    assert set(simulator.booking_counts) == accepted
    assert set(simulator.booking_counts.values()) == {1}
    # Some were sent more than once (crashes, drops); the CNS booked each once.
    assert sum(simulator.requests.values()) > 200
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log_text()


def test_sigterm_requeues_or_finishes_deliveries_under_way(
    tmp_path: Path,
    store: dict[str, object],
    daemon_factory: Callable[..., DaemonProcess],
    cns_simulator: SimulatorThread,
    fee_notes: FeeNotes,
) -> None:
    simulator = cns_simulator.simulator
    simulator.faults.latency = 2.0
    # The drain is shorter than the CNS's latency: deliveries are cut short, queued again.
    config = write_config(tmp_path / "sidecar.toml", cns_simulator.url, drain_timeout=0.5, **store)
    home = tmp_path / "home"
    outbox = where(store, home)
    notes = [fee_notes.make() for _ in range(6)]
    daemon = daemon_factory(home, "--sandbox", "--config", str(config))
    for _, body in notes:
        assert post_note(daemon, body) == 202
    cns_simulator.wait_for(lambda s: sum(s.requests.values()) >= 4, timeout=20)
    assert daemon.stop() == 0
    left = statuses(outbox)
    assert "sending" not in left.values()
    assert set(left.values()) == {"queued"}
    log = daemon.log_text()
    assert "cut short: queued again" in log

    # With a drain longer than the latency, deliveries under way finish.
    config = write_config(tmp_path / "sidecar.toml", cns_simulator.url, drain_timeout=10.0, **store)
    simulator.faults.latency = 1.0
    daemon = daemon_factory(home, "--sandbox", "--config", str(config))
    cns_simulator.wait_for(lambda s: sum(s.requests.values()) >= 8, timeout=20)
    assert daemon.stop() == 0
    left = statuses(outbox)
    assert "sending" not in left.values()
    assert list(left.values()).count("delivered") >= 2

    simulator.faults.latency = 0.0
    daemon_factory(home, "--sandbox", "--config", str(config))
    wait_all_delivered(outbox, {u for u, _ in notes}, timeout=30)
    assert set(simulator.booking_counts.values()) == {1}
    assert len(simulator.bookings) == 6


def sandbox_daemon(
    tmp_path: Path, daemon_factory: Callable[..., DaemonProcess]
) -> tuple[DaemonProcess, int]:
    """``sidecar serve --sandbox`` in ``tmp_path/home`` on free ports; and its simulator's."""
    cns_port = free_port()
    config = tmp_path / "sidecar.toml"
    config.write_text(f"[sandbox]\nport = {free_port()}\ncns_port = {cns_port}\n")
    return daemon_factory(tmp_path / "home", "--sandbox", "--config", str(config)), cns_port


def test_serve_sandbox_runs_its_own_simulator(
    tmp_path: Path,
    daemon_factory: Callable[..., DaemonProcess],
    fee_notes: FeeNotes,
    fee_note_pdf: bytes,
) -> None:
    """``serve --sandbox``: the daemon signs an unsigned fee note with its sandbox key,
    and its simulator checks it as the CNS would (fee-note XSD, our XAdES verifier with
    the sandbox's roots, B-LT), refusing a stand-in signed with plain XMLDSig."""
    daemon, cns_port = sandbox_daemon(tmp_path, daemon_factory)
    home = daemon.home
    note_uuid = str(uuid.uuid4())
    assert post_note(daemon, unsigned_fee_note(note_uuid, fee_note_pdf)) == 202
    stand_in_uuid, stand_in = fee_notes.make()
    assert post_note(daemon, stand_in) == 202
    deadline = time.monotonic() + 60
    while statuses(home) != {note_uuid: "delivered", stand_in_uuid: "rejected"}:
        assert time.monotonic() < deadline, statuses(home)
        time.sleep(0.2)
    with urllib.request.urlopen(f"http://127.0.0.1:{cns_port}/_simulator/stats") as response:
        stats = json.loads(response.read())
    assert stats["booking_counts"] == {note_uuid: 1}
    assert daemon.stop() == 0
