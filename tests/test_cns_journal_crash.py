"""The audit journal misses no outbox state change, however the daemon dies.

A real ``sidecar serve --sandbox`` is killed with SIGKILL at random moments while
fee notes are being posted and delivered (the CNS simulator drops a share of the
connections after booking, so deliveries are retried). After each kill, for every
message in the outbox, the last journal event about it (the journal's entries, plus
the events the outbox holds for the journal and has not handed over yet: the next
start copies them) is its outbox state. After the last restart, the journal alone
says it, and ``sidecar audit verify`` finds the hash chain intact.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.fixtures.cns import FeeNotes, SimulatorThread
from tests.fixtures.daemon import DaemonProcess
from tests.test_cns_crash import post_note, wait_all_delivered, write_config

CYCLES = 5
NOTES_PER_CYCLE = 40


def read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def outbox_states(home: Path) -> dict[str, str]:
    db = read_only(home / "outbox.sqlite3")
    try:
        return dict(db.execute("SELECT id, status FROM messages"))
    finally:
        db.close()


def journal_view(home: Path, *, with_pending: bool) -> tuple[dict[str, list[str]], int]:
    """uuid → outcomes in journal order (then the outbox's events not copied yet), and
    how many of those were still pending in the outbox."""
    outbox = read_only(home / "outbox.sqlite3")
    journal = read_only(home / "audit.sqlite3")
    try:
        (store_id,) = outbox.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
        held = journal.execute(
            "SELECT seq FROM sources WHERE name = ?", (f"outbox:{store_id}",)
        ).fetchone()
        outcomes: dict[str, list[str]] = {}
        for uuid, outcome in journal.execute(
            "SELECT uuid, outcome FROM entries WHERE operation LIKE 'cns.%' "
            "AND operation NOT LIKE 'cns.pid.%' ORDER BY seq"
        ):
            outcomes.setdefault(uuid, []).append(outcome)
        pending = outbox.execute(
            "SELECT uuid, outcome FROM events WHERE seq > ? ORDER BY seq",
            (held[0] if held else 0,),
        ).fetchall()
    finally:
        outbox.close()
        journal.close()
    if with_pending:
        for uuid, outcome in pending:
            outcomes.setdefault(uuid, []).append(outcome)
    return outcomes, len(pending)


def assert_every_state_journaled(home: Path, *, with_pending: bool) -> tuple[int, int]:
    states = outbox_states(home)
    outcomes, pending = journal_view(home, with_pending=with_pending)
    wrong = {
        uuid: (status, outcomes.get(uuid, [])[-3:])
        for uuid, status in states.items()
        if not outcomes.get(uuid) or outcomes[uuid][-1] != status
    }
    assert not wrong, f"{len(wrong)} outbox states without their journal entry: {wrong}"
    # Nothing journaled about a message the outbox does not have (a rolled-back change).
    assert set(outcomes) <= set(states)
    return sum(len(v) for v in outcomes.values()), pending


def test_kill_9_leaves_no_outbox_state_without_its_journal_entry(
    tmp_path: Path,
    daemon_factory: Callable[..., DaemonProcess],
    cns_simulator: SimulatorThread,
    fee_notes: FeeNotes,
) -> None:
    simulator = cns_simulator.simulator
    simulator.faults.latency = 0.05
    simulator.faults.drop_probability = 0.3
    config = write_config(tmp_path / "sidecar.toml", cns_simulator.url)
    home = tmp_path / "home"
    rng = random.Random(15)
    notes = [fee_notes.make() for _ in range(CYCLES * NOTES_PER_CYCLE)]
    accepted: set[str] = set()
    pending_seen = 0
    for cycle in range(CYCLES):
        daemon = daemon_factory(home, "--sandbox", "--config", str(config))
        batch = notes[cycle * NOTES_PER_CYCLE : (cycle + 1) * NOTES_PER_CYCLE]

        def post_all(daemon: DaemonProcess = daemon, batch: list = batch) -> None:
            for note_uuid, body in batch:
                try:
                    if post_note(daemon, body) == 202:
                        accepted.add(note_uuid)
                except OSError:  # killed mid-request: accepted or not, the outbox says
                    return

        poster = threading.Thread(target=post_all)
        poster.start()
        # Killed while posts and deliveries are under way.
        time.sleep(rng.uniform(0.1, 1.0))
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait(10)
        poster.join(60)
        states = outbox_states(home)
        assert accepted <= set(states)  # every 202 is on disk
        _, pending = assert_every_state_journaled(home, with_pending=True)
        pending_seen += pending
    posted = set(outbox_states(home))
    assert len(posted) >= CYCLES  # the kills did not all land before the first post

    daemon = daemon_factory(home, "--sandbox", "--config", str(config))
    wait_all_delivered(home, posted, timeout=180)
    assert daemon.stop() == 0
    entries, pending = assert_every_state_journaled(home, with_pending=False)
    assert pending == 0
    outcomes, _ = journal_view(home, with_pending=False)
    for uuid in posted:
        assert outcomes[uuid][0] == "queued"  # its accept entry
        assert outcomes[uuid].count("delivered") == 1
    assert set(simulator.booking_counts) == posted
    assert set(simulator.booking_counts.values()) == {1}

    verify = subprocess.run(
        [sys.executable, "-m", "sidecar", "audit", "verify"],
        env={**daemon.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "chain intact" in verify.stdout
    print(
        json.dumps(
            {
                "cycles": CYCLES,
                "notes_in_outbox": len(posted),
                "accepted_202": len(accepted),
                "journal_cns_entries": entries,
                "events_pending_after_kills": pending_seen,
                "cns_requests": sum(simulator.requests.values()),
            }
        )
    )
