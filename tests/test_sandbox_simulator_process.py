"""The sandbox's stand-ins run in child processes, not in the daemon's.

``serve --sandbox``'s CNS simulator: its XAdES verification of every deposit (B-LT, the
signer's and the TSA's paths) held the daemon's event loop and GIL while it ran in the
daemon's process. A real daemon (``sidecar serve --sandbox``) signs and deposits a fee
note; the simulator that booked it says which process it is (``GET /_simulator/stats``):
a child of the daemon, and one that ends with the daemon when the daemon is killed with
SIGKILL. The PKI's responders (TSA, OCSP, CRL) likewise answer from a child process.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from sidecar.child_process import STAND_IN_NICENESS
from sidecar.sandbox import SandboxPKI, serve_sandbox_pki
from tests.fixtures.cns import unsigned_fee_note
from tests.fixtures.daemon import DaemonProcess
from tests.fixtures.sandbox import MakeSandboxPKI
from tests.test_cns_crash import post_note, sandbox_daemon, statuses

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc for the parent")


def parent_of(pid: int) -> int:
    """The parent process id of *pid* (``/proc/PID/stat``: the field after the state)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def niceness(pid: int) -> int:
    """The nice value of *pid* (``/proc/PID/stat`` field 19: the 17th after the name)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended; only its parent has not reaped it yet


def test_deposit_is_verified_outside_the_daemon_and_the_simulator_ends_with_it(
    tmp_path: Path, daemon_factory: Callable[..., DaemonProcess], fee_note_pdf: bytes
) -> None:
    daemon, cns_port = sandbox_daemon(tmp_path, daemon_factory)
    home = daemon.home
    note_uuid = str(uuid.uuid4())
    assert post_note(daemon, unsigned_fee_note(note_uuid, fee_note_pdf)) == 202
    deadline = time.monotonic() + 60
    while statuses(home) != {note_uuid: "delivered"}:
        assert time.monotonic() < deadline, statuses(home)
        time.sleep(0.2)
    with urllib.request.urlopen(f"http://127.0.0.1:{cns_port}/_simulator/stats") as response:
        stats = json.loads(response.read())
    # Booked (so verified at B-LT) by a process that is not the daemon's: its child.
    assert stats["booking_counts"] == {note_uuid: 1}
    simulator = stats["pid"]
    assert simulator != daemon.process.pid
    assert parent_of(simulator) == daemon.process.pid
    # The CNS's stand-in yields to the daemon on a busy machine (production has none).
    assert niceness(simulator) > niceness(daemon.process.pid)

    # Killed with no chance to clean up, the daemon leaves no simulator behind.
    os.kill(daemon.process.pid, signal.SIGKILL)
    daemon.process.wait()
    deadline = time.monotonic() + 30
    while alive(simulator):
        assert time.monotonic() < deadline, f"the simulator {simulator} outlived its daemon"
        time.sleep(0.1)


def children(pid: int, module: str) -> list[int]:
    """The child processes of *pid* running ``python -m module``."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if module.encode() in command:
                found.append(int(child))
    return found


async def test_the_pki_responders_answer_from_a_child_process(
    make_sandbox_pki: MakeSandboxPKI,
) -> None:
    pki: SandboxPKI = make_sandbox_pki()
    module = "sidecar.sandbox.services_process"
    # The suite's own sandbox (served for other tests) may have its responders' child.
    before = set(children(os.getpid(), module))
    async with serve_sandbox_pki(pki):
        (child,) = set(children(os.getpid(), module)) - before
        assert "sandbox-pki" not in {thread.name for thread in threading.enumerate()}
        # It yields the CPU to the daemon's loop: it plays another machine.
        assert niceness(child) == min(19, os.nice(0) + STAND_IN_NICENESS)
        # It answers: the root certificate it publishes is the sandbox's.
        url = f"{pki.base_url}/sandbox/certs/root/ca.crt"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200 and response.read()
    # Stopped with the block.
    deadline = time.monotonic() + 30
    while alive(child):
        assert time.monotonic() < deadline, f"the responders' process {child} did not end"
        time.sleep(0.1)
    assert set(children(os.getpid(), module)) == before
