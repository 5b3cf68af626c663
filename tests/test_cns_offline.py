"""Offline mode (``cns.defer_timestamp``) with real parts: a TSA that is really down.

The daemon's only TSA is a loopback relay to the sandbox TSA. Not started, its port is
closed (connections refused); started, it relays. Deposited while it is down, an
unsigned fee note is signed B-B and held ``awaiting_timestamp``; once it is up, the
worker adds the timestamp and validation data (B-LT) and delivers. What the
simulator received is checked with our verifier, and is the held B-B document with
the unsigned properties added and nothing else changed.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable

import aiohttp

from sidecar.api.appkeys import SERVICES
from sidecar.config import BreakerSettings, TrustSettings, TsaSettings
from sidecar.sandbox import SandboxPKI
from tests.fixtures.cns import (
    FeeNotes,
    SimulatorThread,
    sandbox_cns_settings,
    unsigned_fee_note,
    wait_status,
    xml_headers,
)
from tests.fixtures.daemon import Api
from tests.fixtures.trust import TamperingProxy
from tests.test_cns_api import counter, verify_b_lt

UNSIGNED = re.compile(rb"<xades:UnsignedProperties.*?</xades:UnsignedProperties>", re.S)


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


async def test_tsa_down_at_deposit_then_back_delivers_b_lt(
    api_factory: Callable[..., Awaitable[Api]],
    sandbox_services: SandboxPKI,
    real_cns_simulator: SimulatorThread,
    fee_note_pdf: bytes,
) -> None:
    async with aiohttp.ClientSession() as session:
        tsa = TamperingProxy(sandbox_services.tsa_url, session)  # mode "none": a relay
        trust = TrustSettings(
            tsa=(TsaSettings(url=tsa.url, attempts=1),),
            # A short cool-down, so that the test does not wait 30 s for a probe.
            breaker=BreakerSettings(cool_down=0.2, retry_delay=0.0),
        )
        settings = sandbox_cns_settings(real_cns_simulator.url, trust=trust, defer_timestamp=True)
        api = await api_factory(settings, sandbox_pki=sandbox_services)
        worker = api.client.app[SERVICES].cns.worker
        assert worker is not None and worker.upgrader is not None
        worker.poll_seconds = 0.05

        note_uuid = str(uuid.uuid4())
        response = await api.client.post(
            "/v1/cns/fee-notes",
            data=unsigned_fee_note(note_uuid, fee_note_pdf),
            headers=xml_headers(api),
        )
        assert response.status == 202, await response.text()
        assert (await response.json())["status"] == "awaiting_timestamp"
        held_message = await wait_status(api, note_uuid, {"awaiting_timestamp"})
        assert held_message["level"] == "B-B"
        outbox = api.client.app[SERVICES].cns.outbox
        held = (await outbox.run(outbox.get, note_uuid, with_body=True)).body
        assert b"SignatureTimeStamp" not in held

        # The worker keeps trying while the TSA is down; nothing goes to the CNS.
        def tsa_failures() -> float:
            return counter(api, "sidecar_upstream_requests", upstream="tsa", outcome="unavailable")

        await wait_until(lambda: tsa_failures() >= 3, "the worker retried the TSA")
        assert (await wait_status(api, note_uuid, {"awaiting_timestamp"}))["attempts"] == 0
        assert note_uuid not in real_cns_simulator.simulator.requests

        await tsa.start()  # the TSA is back
        try:
            delivered = await wait_status(api, note_uuid, {"delivered", "rejected", "failed"})
        finally:
            await tsa.stop()
    assert delivered["status"] == "delivered", delivered
    assert delivered["level"] == "B-LT"
    assert tsa.requests >= 1

    booked = real_cns_simulator.simulator.bookings[note_uuid]
    await verify_b_lt(booked, sandbox_services)
    # The upgrade only added the unsigned properties to the held B-B signature.
    (added,) = UNSIGNED.findall(booked)
    assert booked.replace(added, b"") == held
    assert real_cns_simulator.simulator.booking_counts[note_uuid] == 1

    assert counter(api, "sidecar_signatures", format="xades", level="B-B") == 1
    assert counter(api, "sidecar_cns_messages", operation="deposit", result="timestamped") == 1
    journal = [e.operation for e in api.client.app[SERVICES].journal.entries()]
    assert journal.index("sign.fee-note") < journal.index("cns.timestamp_upgrade")
    assert journal.index("cns.timestamp_upgrade") < journal.index("cns.deposit")


async def test_without_defer_timestamp_a_tsa_outage_is_503_and_nothing_is_queued(
    api_factory: Callable[..., Awaitable[Api]],
    sandbox_services: SandboxPKI,
    real_cns_simulator: SimulatorThread,
    fee_note_pdf: bytes,
) -> None:
    async with aiohttp.ClientSession() as session:
        tsa = TamperingProxy(sandbox_services.tsa_url, session)  # never started: closed
        trust = TrustSettings(tsa=(TsaSettings(url=tsa.url, attempts=1),))
        settings = sandbox_cns_settings(real_cns_simulator.url, trust=trust)
        api = await api_factory(settings, sandbox_pki=sandbox_services)
        note_uuid = str(uuid.uuid4())
        response = await api.client.post(
            "/v1/cns/fee-notes",
            data=unsigned_fee_note(note_uuid, fee_note_pdf),
            headers=xml_headers(api),
        )
    assert response.status == 503
    assert (await response.json())["code"] == "upstream_unavailable"
    missing = await api.client.get(f"/v1/cns/messages/{note_uuid}", headers=api.auth())
    assert missing.status == 404


async def test_a_held_note_that_can_never_be_upgraded_fails_and_holds_nobody_up(
    api_factory: Callable[..., Awaitable[Api]],
    sandbox_services: SandboxPKI,
    real_cns_simulator: SimulatorThread,
    fee_note_pdf: bytes,
    fee_notes: FeeNotes,
) -> None:
    # The sandbox TSA is up. A caller's plain XMLDSig note reads as "B-B" and is held,
    # but has no XAdES properties to extend: it fails, with the reason, at once.
    settings = sandbox_cns_settings(real_cns_simulator.url, defer_timestamp=True)
    api = await api_factory(settings, sandbox_pki=sandbox_services)
    api.client.app[SERVICES].cns.worker.poll_seconds = 0.05  # type: ignore[union-attr]
    plain_uuid, plain = fee_notes.make()
    response = await api.client.post("/v1/cns/fee-notes", data=plain, headers=xml_headers(api))
    assert (await response.json())["status"] == "awaiting_timestamp"
    failed = await wait_status(api, plain_uuid, {"failed", "delivered", "rejected"})
    assert failed["status"] == "failed"
    assert "not a XAdES signature" in failed["last_error"]
    # Signed here with the TSA up: B-LT straight away, delivered.
    note_uuid = str(uuid.uuid4())
    response = await api.client.post(
        "/v1/cns/fee-notes",
        data=unsigned_fee_note(note_uuid, fee_note_pdf),
        headers=xml_headers(api),
    )
    assert (await response.json())["status"] == "queued"
    assert (await wait_status(api, note_uuid, {"delivered", "failed"}))["status"] == "delivered"
    assert list(real_cns_simulator.simulator.bookings) == [note_uuid]
    assert counter(api, "sidecar_cns_messages", operation="deposit", result="failed") == 1
