"""Delivery faults against the CNS simulator on loopback: an answer lost after the CNS
booked the message, with the retry budget spent; a CNS that goes away and comes back.

A note whose answer was lost must never end in a state that invites resubmitting it
under a new UUID (the CNS would bill twice): the daemon asks the CNS (its status
lookup by idempotency key) and, when the CNS cannot say, keeps it ``unknown``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sidecar.api.appkeys import SERVICES
from sidecar.clients import Scope
from sidecar.cns.doctor_checks import check_outbox
from sidecar.cns.outbox import Outbox, Status
from sidecar.cns.simulator import CnsSimulator
from sidecar.config import CnsOperation, CnsWire, Settings
from tests.fixtures.browser import Browser
from tests.fixtures.cns import FeeNotes, SimulatorThread, cns_settings, wait_status, xml_headers
from tests.fixtures.daemon import Api, free_port
from tests.test_doctor import by_check, home_paths, run_checks

NOTE = "0b1c3f7e-3c55-4a43-9d6f-6f8a0c1c8c01"


async def deposit(api: Api, body: bytes) -> None:
    response = await api.client.post("/v1/cns/fee-notes", data=body, headers=xml_headers(api))
    assert response.status == 202, await response.text()


async def settled(api: Api, fee_notes: FeeNotes) -> tuple[str, dict]:
    """Deposit a fresh note; its uuid and its message once the worker is done with it."""
    note_uuid, body = fee_notes.make()
    await deposit(api, body)
    message = await wait_status(api, note_uuid, {"delivered", "failed", "unknown", "rejected"})
    return note_uuid, message


async def health_checks(api: Api) -> dict[str, dict]:
    response = await api.client.get("/v1/health", headers=api.auth("all"))
    return {c["name"]: c for c in (await response.json())["checks"]}


async def test_answer_dropped_after_booking_is_found_out_by_the_status_lookup(
    api_factory: Callable[..., Awaitable[Api]],
    cns_simulator: SimulatorThread,
    fee_notes: FeeNotes,
) -> None:
    # Every attempt is booked (the first) or answered from the CNS's memory (the
    # second), and then its connection dropped: the daemon never sees an answer.
    api = await api_factory(cns_settings(cns_simulator.url, max_attempts=2))
    simulator = cns_simulator.simulator
    simulator.faults.drop_after_booking = 10
    note_uuid, message = await settled(api, fee_notes)
    # Not "failed": the CNS booked it, and the daemon asked before giving up.
    assert message["status"] == "delivered", message
    assert message["attempts"] == 2
    assert simulator.booking_counts[note_uuid] == 1
    assert simulator.lookups[note_uuid] == 1
    assert b"booked" in message["answer"]["body"].encode()


async def test_answer_lost_and_cns_cannot_say_is_unknown_then_settled(
    api_factory: Callable[..., Awaitable[Api]],
    cns_simulator: SimulatorThread,
    fee_notes: FeeNotes,
) -> None:
    # The CNS answers slower than the delivery timeout: it books the note after the
    # daemon stopped waiting, and its status lookup is as slow.
    api = await api_factory(cns_settings(cns_simulator.url, max_attempts=2, delivery_timeout=0.5))
    worker = api.client.app[SERVICES].cns.worker
    assert worker is not None
    worker.lookup_seconds = 0.5
    simulator = cns_simulator.simulator
    simulator.faults.latency = 1.5
    note_uuid, message = await settled(api, fee_notes)
    assert message["status"] == "unknown", message
    assert "do not send it again under a new UUID" in message["last_error"]
    cns_simulator.wait_for(lambda s: s.booking_counts[note_uuid] == 1, timeout=10)

    # The status page's data (the outbox health check) says so, degraded.
    checks = await health_checks(api)
    assert checks["outbox"]["status"] == "degraded"
    assert checks["outbox"]["data"]["unknown"] == 1
    assert "do not send them again under a new UUID" in checks["outbox"]["detail"]
    listed = await api.client.get("/v1/cns/messages?status=unknown", headers=api.auth())
    assert [m["uuid"] for m in (await listed.json())["messages"]] == [note_uuid]

    # The CNS speaks again: the daemon's next lookup settles it, without sending it twice.
    simulator.faults.latency = 0.0
    message = await wait_status(api, note_uuid, {"delivered", "failed", "rejected"})
    assert message["status"] == "delivered"
    assert simulator.booking_counts[note_uuid] == 1
    assert simulator.requests[note_uuid] == 2  # the two attempts; lookups are not deposits


async def test_never_processed_is_failed_and_says_resubmitting_is_safe(
    api_factory: Callable[..., Awaitable[Api]],
    cns_simulator: SimulatorThread,
    fee_notes: FeeNotes,
) -> None:
    # Connections dropped before processing: the CNS's lookup says it has no record.
    api = await api_factory(cns_settings(cns_simulator.url, max_attempts=2))
    cns_simulator.simulator.faults.drop_after_read = 10
    note_uuid, message = await settled(api, fee_notes)
    assert message["status"] == "failed"
    assert "the CNS has no record of it" in message["last_error"]
    assert note_uuid not in cns_simulator.simulator.bookings


async def test_a_cns_without_status_lookup_never_makes_failed(
    api_factory: Callable[..., Awaitable[Api]],
    cns_simulator: SimulatorThread,
    fee_notes: FeeNotes,
) -> None:
    # A lookup path the CNS does not serve answers 404 too: that is no "no record".
    wire = CnsWire(lookup=CnsOperation("GET", "/nowhere/{uuid}"))
    api = await api_factory(cns_settings(cns_simulator.url, max_attempts=2, wire=wire))
    cns_simulator.simulator.faults.drop_after_read = 10
    _, message = await settled(api, fee_notes)
    assert message["status"] == "unknown", message


async def test_delivery_resumes_within_seconds_of_the_cns_return(
    api_factory: Callable[..., Awaitable[Api]],
    stand_in_xsd: Path,
    fee_notes: FeeNotes,
) -> None:
    port = free_port()
    simulator = CnsSimulator(xsd=stand_in_xsd, seed=7)
    thread = SimulatorThread(simulator, port).start()
    # The retry schedule alone would next try 30 to 60 s after the first failure.
    settings = cns_settings(
        thread.url, backoff_initial=60.0, backoff_max=600.0, connect_timeout=1.0
    )
    api = await api_factory(settings)
    try:
        first_uuid, first = fee_notes.make()
        await deposit(api, first)
        await wait_status(api, first_uuid, {"delivered"})

        thread.stop()  # the CNS goes away
        note_uuid, body = fee_notes.make()
        await deposit(api, body)
        deadline = time.monotonic() + 15
        message = await wait_status(api, note_uuid, {"queued", "sending"})
        while not message["last_error"] and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            message = await wait_status(api, note_uuid, {"queued", "sending"})
        assert message["attempts"] == 1 and message["last_error"], message
        # In words, not an exception's class name.
        assert "connection refused" in message["last_error"]
        assert "Error" not in message["last_error"]
        await asyncio.sleep(4)  # probes find it down meanwhile
        checks = await health_checks(api)
        assert "deliveries paused" in checks["cns"]["detail"]

        thread = SimulatorThread(simulator, port).start()  # back, on the same port
        back = time.monotonic()
        message = await wait_status(api, note_uuid, {"delivered"}, timeout=60)
        resumed = time.monotonic() - back
        print(f"delivered {resumed:.2f} s after the CNS came back")
        assert resumed < 10
        assert message["attempts"] == 2
        assert simulator.booking_counts == {first_uuid: 1, note_uuid: 1}
    finally:
        await api.client.close()
        thread.stop()


async def test_doctor_names_unknown_messages(tmp_path: Path) -> None:
    paths = home_paths(tmp_path / "home")
    outbox = Outbox(paths.data_dir / "outbox.sqlite3")
    outbox.enqueue_deposit(NOTE, b"<x/>", "d", client="t")
    outbox.claim(1)
    outbox.finish(NOTE, Status.UNKNOWN, error="answer lost")
    outbox.close()
    kwargs = {"paths": paths, "settings": Settings(), "sandbox": False}
    found = by_check(await run_checks(kwargs, [("outbox", check_outbox)]))
    assert found["outbox:unknown"].status == "warn"
    assert "do not send them again under a new UUID" in found["outbox:unknown"].fix
    assert found["outbox:unknown"].data["unknown"] == 1
    # The operator may send it again, with the same UUID (the CNS deduplicates).
    outbox = Outbox(paths.data_dir / "outbox.sqlite3")
    try:
        assert outbox.retry(NOTE).status == Status.QUEUED
    finally:
        outbox.close()


async def test_status_page_shows_unknown_messages(cns_api: Api, browser: Browser) -> None:
    outbox = cns_api.client.app[SERVICES].cns.outbox
    # Held (never claimed by the worker meanwhile), then as the worker leaves it.
    await outbox.run(
        outbox.enqueue_deposit, NOTE, b"<x/>", "d", client="all", awaiting_timestamp=True
    )
    await outbox.run(outbox.finish, NOTE, Status.UNKNOWN, error="answer lost")
    token = cns_api.store.create("it-admin", frozenset({Scope.ADMIN}))
    page = await browser.new_page()
    await page.goto(f"{cns_api.client.make_url('/')}#token={token}")
    assert await page.wait_for("document.body.dataset.ready") == "true"
    # The outbox card says it in words, as a warning; what to do is in the list of
    # what is wrong, first on the page.
    warning = await page.evaluate(
        "Array.from(document.querySelectorAll('[data-check=\"outbox\"] p.warn'))"
        ".map(e => e.textContent).join(' ')"
    )
    assert "1 fee note's fate at the CNS is not known yet" in warning
    detail = await page.evaluate(
        "document.querySelector('[data-todo=\"outbox\"] .detail').textContent"
    )
    assert "do not send them again under a new UUID" in detail
    await page.close()
