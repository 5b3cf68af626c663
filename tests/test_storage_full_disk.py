"""A full disk, for real: the daemon's home on a small tmpfs filled to the last byte.

- Every route while the disk is full: reads answer, every write path answers
  ``503 storage_unavailable`` (problem+json, ``Retry-After``), nothing is a 500,
  ``/v1/health`` says degraded with a ``storage`` check. Deliveries under way when the
  disk filled (booked by the CNS meanwhile) reach ``delivered`` once there is room,
  without a restart and without being sent again.
- A start with the disk full comes up degraded (reads work, deposits 503) and recovers
  once there is room, without a restart.

Mounting a tmpfs needs root (CAP_SYS_ADMIN), which the CI here has; elsewhere the test
is skipped with that reason (there is no honest stand-in for a real full disk: an
injected error would not show what SQLite does with a WAL and no room for its files).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.api.appkeys import SERVICES
from sidecar.api.contract import CONTRACT
from sidecar.sandbox import SandboxPKI
from sidecar.signing.profiles import BUNDLED_PROFILE_DIR
from tests.fixtures.cns import FeeNotes, SimulatorThread, sandbox_cns_settings, wait_status
from tests.fixtures.daemon import Api, DaemonProcess
from tests.test_cns_crash import post_note, wait_all_delivered, write_config
from tests.test_cns_journal_crash import assert_every_state_journaled
from tests.test_cns_pid import pid_request

SAMPLES = BUNDLED_PROFILE_DIR / "samples"
PROBLEM = "application/problem+json"


class SmallDisk:
    """A tmpfs at *path*: filled with a ballast file, emptied by removing it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ballast = path / "ballast"

    def fill(self) -> None:
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError:
                    continue
        finally:
            os.close(fd)
        assert os.statvfs(self.path).f_bavail == 0

    def free(self) -> None:
        self.ballast.unlink()

    def remount(self, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True)


def mount_small_disk(path: Path, size: str = "32m") -> SmallDisk:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    return SmallDisk(path)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[Path], SmallDisk]]:
    """Call with a directory under tmp_path to mount a 32 MiB tmpfs there."""
    mounted: list[Path] = []

    def mount(path: Path) -> SmallDisk:
        disk = mount_small_disk(path)
        mounted.append(path)
        return disk

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def answer(api: Api, method: str, url: str, **kw: Any) -> tuple[int, str, Any]:
    response = await api.client.request(method, url, **kw)
    raw = await response.read()
    content_type = response.headers.get("Content-Type", "")
    body: Any = raw
    if "json" in content_type:
        body = await response.json(content_type=None)
    return response.status, content_type, body


async def test_every_route_on_a_full_disk_and_recovery_without_restart(
    tmp_path: Path,
    small_disk: Callable[[Path], SmallDisk],
    api_factory: Callable[..., Awaitable[Api]],
    sandbox_services: SandboxPKI,
    cns_simulator: SimulatorThread,
    fee_notes: FeeNotes,
    fee_note_pdf: bytes,
) -> None:
    disk = small_disk(tmp_path / "home0")  # api_factory's first home
    api = await api_factory(sandbox_cns_settings(cns_simulator.url), sandbox_pki=sandbox_services)
    auth = api.auth()  # every scope, admin included
    xml = {**auth, "Content-Type": "application/xml"}
    simulator = cns_simulator.simulator

    # Deliveries under way when the disk fills: the CNS books them meanwhile.
    simulator.faults.latency = 3.0
    under_way = [fee_notes.make() for _ in range(3)]
    for _, body in under_way:
        assert (await answer(api, "POST", "/v1/cns/fee-notes", data=body, headers=xml))[0] == 202
    deadline = time.monotonic() + 20
    while len(simulator.requests) < 3:
        assert time.monotonic() < deadline, simulator.stats()
        await asyncio.sleep(0.05)
    disk.fill()

    pdf = fee_note_pdf
    form = aiohttp.FormData()
    form.add_field(
        "xml",
        (SAMPLES / "fee-note.xml").read_bytes(),
        filename="x.xml",
        content_type="application/xml",
    )
    form.add_field("pdf", pdf, filename="fee-note.pdf", content_type="application/pdf")
    note_uuid = under_way[0][0]
    new_uuid, new_note = fee_notes.make()
    octets = {**auth, "Content-Type": "application/octet-stream"}
    pdf_headers = {**auth, "Content-Type": "application/pdf"}

    def pid() -> dict[str, Any]:
        return {"data": pid_request('<Act code="C1"/>'), "headers": xml}

    deposit = "/v1/cns/fee-notes"
    stamp = {"data": b"x", "headers": octets}
    recipe = {"data": form, "headers": auth}
    one = f"/v1/cns/messages/{note_uuid}"
    # A batch lives in memory: it signs on a full disk, as the signing routes do.
    batch_body = {"documents": [{"kind": "xml", "xml": base64.b64encode(b"<a>x</a>").decode()}]}
    batch = {"json": batch_body, "headers": auth}
    no_batch = "/v1/batches/00000000000000000000000000000000"
    # (method, path as in the contract, url, request, statuses allowed while full)
    routes: list[tuple[str, str, str, dict[str, Any], set[int]]] = [
        ("GET", "/v1/health", "/v1/health", {"headers": auth}, {200}),
        ("GET", "/v1/uuids", "/v1/uuids?count=2", {"headers": auth}, {200}),
        ("GET", "/v1/keys", "/v1/keys", {"headers": auth}, {200}),
        ("POST", "/v1/timestamps", "/v1/timestamps?hash=sha256", stamp, {200}),
        ("POST", "/v1/xml/sign", "/v1/xml/sign", {"data": b"<a>x</a>", "headers": xml}, {200}),
        ("POST", "/v1/pdf/sign", "/v1/pdf/sign", {"data": pdf, "headers": pdf_headers}, {200}),
        ("POST", "/v1/forms/{profile}/sign", "/v1/forms/fee-note/sign", recipe, {200}),
        ("POST", "/v1/verify", "/v1/verify", {"data": under_way[1][1], "headers": xml}, {200}),
        ("POST", deposit, deposit, {"data": new_note, "headers": xml}, {503}),
        ("DELETE", "/v1/cns/fee-notes/{uuid}", f"{deposit}/{note_uuid}", {"headers": auth}, {503}),
        ("GET", "/v1/cns/messages/{uuid}", one, {"headers": auth}, {200}),
        ("GET", "/v1/cns/messages", "/v1/cns/messages", {"headers": auth}, {200}),
        ("POST", "/v1/cns/pid/simulations", "/v1/cns/pid/simulations", pid(), {503}),
        ("POST", "/v1/cns/pid/validations", "/v1/cns/pid/validations", pid(), {503}),
        ("POST", "/v1/cns/pid/contestations", "/v1/cns/pid/contestations", pid(), {503}),
        ("POST", "/v1/batches", "/v1/batches", batch, {202}),
        ("GET", "/v1/batches/{batch}", no_batch, {"headers": auth}, {404}),
        ("GET", "/v1/batches/{batch}/documents/{index}", f"{no_batch}/documents/0",
         {"headers": auth}, {404}),
        ("DELETE", "/v1/batches/{batch}", no_batch, {"headers": auth}, {404}),
        ("GET", "/metrics", "/metrics", {"headers": auth}, {200}),
        ("GET", "/openapi.json", "/openapi.json", {}, {200}),
    ]  # fmt: skip
    assert {(m, p) for m, p, *_ in routes} == {(op.method, op.path) for op in CONTRACT}
    while_full: dict[str, tuple[int, Any]] = {}
    for method, path, url, request, allowed in routes:
        status, content_type, body = await answer(api, method, url, **request)
        while_full[f"{method} {path}"] = (status, body if status >= 400 else "")
        assert status in allowed, (method, url, status, body)
        if status == 503:
            assert content_type.startswith(PROBLEM)
            assert body["code"] == "storage_unavailable", body
            assert "cannot write: the disk is full" in body["detail"]
            assert str(tmp_path) not in body["detail"]
    health = while_full["GET /v1/health"]
    status, _, health_body = await answer(api, "GET", "/v1/health", headers=auth)
    assert health_body["status"] == "degraded"
    (storage,) = [c for c in health_body["checks"] if c["name"] == "storage"]
    assert storage["status"] == "degraded" and "disk" in storage["detail"], storage
    assert health[0] == 200

    # The CNS answers the deliveries under way; the disk cannot take the outcome, which
    # waits in memory: the messages still say ``sending``, nothing is sent again.
    deadline = time.monotonic() + 30
    while len(simulator.booking_counts) < 3:
        assert time.monotonic() < deadline, simulator.stats()
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    for note, _ in under_way:
        status, _, message = await answer(api, "GET", f"/v1/cns/messages/{note}", headers=auth)
        assert message["status"] == "sending"
    status, _, health_body = await answer(api, "GET", "/v1/health", headers=auth)
    (storage,) = [c for c in health_body["checks"] if c["name"] == "storage"]
    assert storage["data"]["outcomes_held_in_memory"] == 3

    # Room again: no restart, the held outcomes are recorded, writes work.
    disk.free()
    simulator.faults.latency = 0.0
    for note, _ in under_way:
        await wait_status(api, note, {"delivered"}, timeout=30)
    assert [simulator.booking_counts[n] for n, _ in under_way] == [1, 1, 1]
    assert [simulator.requests[n] for n, _ in under_way] == [1, 1, 1]  # not sent again
    status, _, accepted = await answer(api, "POST", "/v1/cns/fee-notes", data=new_note, headers=xml)
    assert status == 202, accepted
    await wait_status(api, new_uuid, {"delivered"})
    assert (await answer(api, "DELETE", f"/v1/cns/fee-notes/{note_uuid}", headers=auth))[0] == 202
    status, _, pid = await answer(
        api, "POST", "/v1/cns/pid/simulations", data=pid_request('<Act code="C1"/>'), headers=xml
    )
    assert status == 200, pid
    status, _, health_body = await answer(api, "GET", "/v1/health", headers=auth)
    (storage,) = [c for c in health_body["checks"] if c["name"] == "storage"]
    assert storage["status"] == "ok", storage

    # The journal has every state the outbox went through, and its chain holds.
    await asyncio.sleep(0.3)
    assert_every_state_journaled(disk.path, with_pending=False)
    assert api.client.app[SERVICES].journal.verify().ok


def get_json(daemon: DaemonProcess, url: str, token: str = "") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        daemon.base_url + url, headers={"Authorization": f"Bearer {token or daemon.token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def storage_check(daemon: DaemonProcess, admin: str) -> dict[str, Any]:
    status, health = get_json(daemon, "/v1/health", admin)
    assert status == 200
    (check,) = [c for c in health["checks"] if c["name"] == "storage"]
    return check


def test_a_start_on_a_full_disk_comes_up_degraded_and_recovers(
    tmp_path: Path,
    small_disk: Callable[[Path], SmallDisk],
    daemon_factory: Callable[..., DaemonProcess],
    cns_simulator: SimulatorThread,
    fee_notes: FeeNotes,
) -> None:
    home = tmp_path / "home"  # the daemon's log goes beside it, off the small disk
    disk = small_disk(home)
    config = write_config(tmp_path / "sidecar.toml", cns_simulator.url)
    simulator = cns_simulator.simulator
    daemon = daemon_factory(home, "--sandbox", "--config", str(config))
    delivered = [fee_notes.make() for _ in range(2)]
    for _, body in delivered:
        assert post_note(daemon, body) == 202
    wait_all_delivered(home, {n for n, _ in delivered}, timeout=60)
    # Two more the CNS refuses for now (503): they stay queued across the restart.
    simulator.faults.statuses = [503] * 1000
    queued = [fee_notes.make() for _ in range(2)]
    for _, body in queued:
        assert post_note(daemon, body) == 202
    assert daemon.stop() == 0
    made = subprocess.run(
        [sys.executable, "-m", "sidecar", "token", "create", "ops", "--scope", "admin"],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    admin = made.stdout.strip().split()[-1]

    disk.fill()
    daemon = daemon_factory(home, "--sandbox", "--config", str(config))
    status, health = get_json(daemon, "/v1/health")
    assert (status, health["status"]) == (200, "degraded")
    check = storage_check(daemon, admin)
    assert check["status"] == "degraded" and "disk" in check["detail"], check
    status, listing = get_json(daemon, "/v1/cns/messages")
    assert status == 200 and len(listing["messages"]) == 4
    status, one = get_json(daemon, f"/v1/cns/messages/{delivered[0][0]}")
    assert (status, one["status"]) == (200, "delivered")
    new_uuid, new_note = fee_notes.make()
    assert post_note(daemon, new_note) == 503

    disk.free()
    simulator.faults.statuses = []
    assert post_note(daemon, new_note) == 202
    wait_all_delivered(home, {n for n, _ in delivered + queued} | {new_uuid}, timeout=60)
    deadline = time.monotonic() + 20
    while storage_check(daemon, admin)["status"] != "ok":
        assert time.monotonic() < deadline, storage_check(daemon, admin)
        time.sleep(0.2)
    assert set(simulator.booking_counts.values()) == {1}
    assert daemon.stop() == 0
    log = daemon.log_text()
    assert "Traceback" not in log
    assert_every_state_journaled(home, with_pending=False)


def test_a_start_on_a_read_only_disk_comes_up_degraded_and_recovers(
    tmp_path: Path,
    small_disk: Callable[[Path], SmallDisk],
    daemon_factory: Callable[..., DaemonProcess],
    cns_simulator: SimulatorThread,
    fee_notes: FeeNotes,
) -> None:
    """The file system remounted read-only (as ext4 does on errors) before a start: the
    daemon reads its outbox, refuses deposits with 503, and takes them again once the
    file system is read-write, without a restart."""
    home = tmp_path / "home"
    disk = small_disk(home)
    config = write_config(tmp_path / "sidecar.toml", cns_simulator.url)
    daemon = daemon_factory(home, "--sandbox", "--config", str(config))
    first_uuid, first = fee_notes.make()
    assert post_note(daemon, first) == 202
    wait_all_delivered(home, {first_uuid}, timeout=60)
    assert daemon.stop() == 0

    disk.remount("ro")
    daemon = daemon_factory(home, "--sandbox", "--config", str(config))
    status, health = get_json(daemon, "/v1/health")
    assert (status, health["status"]) == (200, "degraded")
    status, one = get_json(daemon, f"/v1/cns/messages/{first_uuid}")
    assert (status, one["status"]) == (200, "delivered")
    new_uuid, new_note = fee_notes.make()
    assert post_note(daemon, new_note) == 503

    disk.remount("rw")
    assert post_note(daemon, new_note) == 202
    wait_all_delivered(home, {first_uuid, new_uuid}, timeout=60)
    assert set(cns_simulator.simulator.booking_counts.values()) == {1}
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log_text()
    assert_every_state_journaled(home, with_pending=False)
