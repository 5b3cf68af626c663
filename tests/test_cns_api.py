"""CNS routes against the simulator on loopback: deposit, cancel, idempotency, errors;
an unsigned fee note signed by the daemon and checked by the simulator with our verifier.

``cns_api`` here runs each test on both outbox stores: the SQLite file and PostgreSQL
(tests/fixtures/postgres.py), with the audit journal following."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from lxml import etree

from sidecar.api.appkeys import SERVICES
from sidecar.sandbox import SandboxPKI
from sidecar.signing.report import Indication, Level
from sidecar.signing.xades_verify import VerificationPolicy, verify_xml
from sidecar.trust import load_certificates
from tests.fixtures.cns import (
    FeeNotes,
    SimulatorThread,
    cns_settings,
    fee_note_xml,
    sandbox_cns_settings,
    unsigned_fee_note,
    wait_status,
    xml_headers,
)
from tests.fixtures.daemon import Api

FN = "{urn:sidecar:standin:cns:fee-note:1}"


@pytest.fixture
async def cns_api(
    api_factory: Callable[..., Awaitable[Api]],
    cns_simulator: SimulatorThread,
    outbox_location: Callable[[str], Path | str],
) -> AsyncIterator[Api]:
    """The fixture's in-process daemon, on each outbox store."""
    api = await api_factory(cns_settings(cns_simulator.url, outbox=outbox_location("o.sqlite3")))
    yield api
    await api.client.close()  # before the simulator stops (see tests/fixtures/cns.py)


def counter(api: Api, name: str, **labels: str) -> float:
    """A counter's value on the daemon's /metrics registry (0 when never incremented)."""
    value = api.client.app[SERVICES].metrics.registry.get_sample_value(f"{name}_total", labels)
    return value or 0.0


async def verify_b_lt(document: bytes, pki: SandboxPKI) -> None:
    """Our verifier, the sandbox's roots, the embedded data only: TOTAL_PASSED at B-LT."""
    policy = VerificationPolicy(trust_roots=load_certificates(pki.roots_pem))
    (report,) = await verify_xml(document, policy)
    assert report.indication == Indication.TOTAL_PASSED, report
    assert report.level == Level.B_LT, report


async def deposit(api: Api, body: bytes) -> tuple[int, dict]:
    response = await api.client.post("/v1/cns/fee-notes", data=body, headers=xml_headers(api))
    return response.status, await response.json()


async def test_deposit_is_delivered_once(
    cns_api: Api, cns_simulator: SimulatorThread, fee_notes: FeeNotes
) -> None:
    note_uuid, body = fee_notes.make()
    status, accepted = await deposit(cns_api, body)
    assert status == 202
    assert accepted == {
        "uuid": note_uuid,
        "status": "queued",
        "status_url": f"/v1/cns/messages/{note_uuid}",
    }
    message = await wait_status(cns_api, note_uuid, {"delivered"})
    assert message["attempts"] == 1
    assert message["answer"]["status"] == 200
    assert "<Status>booked</Status>" in message["answer"]["body"]
    assert cns_simulator.simulator.booking_counts[note_uuid] == 1
    assert cns_simulator.simulator.bookings[note_uuid] == body


async def test_same_message_twice_is_one_booking(
    cns_api: Api, cns_simulator: SimulatorThread, fee_notes: FeeNotes
) -> None:
    note_uuid, body = fee_notes.make()
    first = await deposit(cns_api, body)
    await wait_status(cns_api, note_uuid, {"delivered"})
    second = await deposit(cns_api, body)
    assert first[0] == second[0] == 202
    assert second[1]["uuid"] == note_uuid and second[1]["status"] == "delivered"
    await asyncio.sleep(0.2)
    assert cns_simulator.simulator.booking_counts[note_uuid] == 1
    assert cns_simulator.simulator.requests[note_uuid] == 1


async def test_same_uuid_other_content_is_409(cns_api: Api, fee_notes: FeeNotes) -> None:
    note_uuid, body = fee_notes.make()
    assert (await deposit(cns_api, body))[0] == 202
    _, other = fee_notes.make(note_uuid, amount="99.00")
    status, problem = await deposit(cns_api, other)
    assert status == 409
    assert problem["code"] == "duplicate_uuid" and problem["uuid"] == note_uuid


async def test_concurrent_duplicates_make_one_row_and_one_delivery(
    cns_api: Api, cns_simulator: SimulatorThread, fee_notes: FeeNotes
) -> None:
    note_uuid, body = fee_notes.make()
    results = await asyncio.gather(*(deposit(cns_api, body) for _ in range(40)))
    assert {status for status, _ in results} == {202}
    assert {answer["uuid"] for _, answer in results} == {note_uuid}
    await wait_status(cns_api, note_uuid, {"delivered"})
    listing = await (await cns_api.client.get("/v1/cns/messages", headers=cns_api.auth())).json()
    assert [m["uuid"] for m in listing["messages"]] == [note_uuid]
    await asyncio.sleep(0.2)
    assert cns_simulator.simulator.requests[note_uuid] == 1


async def test_cancel_is_delivered_after_its_deposit(
    cns_api: Api, cns_simulator: SimulatorThread, fee_notes: FeeNotes
) -> None:
    # The CNS is slow: the cancellation is posted while the deposit is still on its way.
    cns_simulator.simulator.faults.latency = 0.3
    note_uuid, body = fee_notes.make()
    assert (await deposit(cns_api, body))[0] == 202
    response = await cns_api.client.delete(f"/v1/cns/fee-notes/{note_uuid}", headers=cns_api.auth())
    assert response.status == 202
    cancel = await response.json()
    assert cancel["fee_note_uuid"] == note_uuid and cancel["uuid"] != note_uuid
    # Asking again gives the same cancellation, not a second one.
    again = await cns_api.client.delete(f"/v1/cns/fee-notes/{note_uuid}", headers=cns_api.auth())
    assert (await again.json())["uuid"] == cancel["uuid"]
    done = await wait_status(cns_api, cancel["uuid"], {"delivered", "rejected", "failed"})
    assert done["status"] == "delivered", done
    assert "<Status>cancelled</Status>" in done["answer"]["body"]
    deposit_state = await wait_status(cns_api, note_uuid, {"delivered"})
    assert deposit_state["delivered"] <= done["delivered"]
    assert cns_simulator.simulator.cancellations == {note_uuid: cancel["uuid"]}


async def test_cancel_unknown_fee_note_is_404(cns_api: Api) -> None:
    response = await cns_api.client.delete(
        f"/v1/cns/fee-notes/{uuid.uuid4()}", headers=cns_api.auth()
    )
    assert response.status == 404
    assert (await response.json())["code"] == "not_found"


async def test_503_five_times_then_delivered_once(
    cns_api: Api, cns_simulator: SimulatorThread, fee_notes: FeeNotes
) -> None:
    cns_simulator.simulator.faults.statuses = [503] * 5
    note_uuid, body = fee_notes.make()
    assert (await deposit(cns_api, body))[0] == 202
    message = await wait_status(cns_api, note_uuid, {"delivered", "failed"})
    assert message["status"] == "delivered"
    assert message["attempts"] == 6
    assert cns_simulator.simulator.requests[note_uuid] == 6
    assert cns_simulator.simulator.booking_counts[note_uuid] == 1
    # /metrics saw each exchange and the message's life.
    assert counter(cns_api, "sidecar_upstream_requests", upstream="cns", outcome="error") == 5
    assert counter(cns_api, "sidecar_upstream_requests", upstream="cns", outcome="ok") >= 1
    assert counter(cns_api, "sidecar_cns_messages", operation="deposit", result="queued") == 1
    assert counter(cns_api, "sidecar_cns_messages", operation="deposit", result="retried") == 5
    assert counter(cns_api, "sidecar_cns_messages", operation="deposit", result="delivered") == 1


async def test_rejected_message_shows_the_cns_reasons(
    cns_api: Api, cns_simulator: SimulatorThread, fee_notes: FeeNotes
) -> None:
    # Valid XML and signed, but an amount that is not a decimal: the XSD refuses it.
    note_uuid, body = fee_notes.make(amount="a lot")
    assert (await deposit(cns_api, body))[0] == 202
    message = await wait_status(cns_api, note_uuid, {"rejected", "delivered", "failed"})
    assert message["status"] == "rejected"
    assert message["attempts"] == 1
    assert message["answer"]["status"] == 422
    assert message["reasons"] and message["reasons"][0]["code"] == "XSD"
    assert "amount" in message["reasons"][0]["message"]
    assert note_uuid not in cns_simulator.simulator.bookings
    # Nothing to cancel at the CNS.
    response = await cns_api.client.delete(f"/v1/cns/fee-notes/{note_uuid}", headers=cns_api.auth())
    assert response.status == 409
    assert (await response.json())["code"] == "not_cancellable"


async def test_retry_budget_spent_is_failed(
    api_factory: Callable[..., Awaitable[Api]],
    cns_simulator: SimulatorThread,
    fee_notes: FeeNotes,
) -> None:
    api = await api_factory(cns_settings(cns_simulator.url, max_attempts=3))
    cns_simulator.simulator.faults.statuses = [500] * 10
    note_uuid, body = fee_notes.make()
    assert (await deposit(api, body))[0] == 202
    message = await wait_status(api, note_uuid, {"failed", "delivered"})
    assert message["status"] == "failed" and message["attempts"] == 3
    # The CNS's status lookup says it processed nothing: failed, safe to send again.
    assert (
        message["last_error"]
        == "CNS answered 500; the CNS has no record of it: it may be sent again"
    )
    health = await (await api.client.get("/v1/health", headers=api.auth())).json()
    assert health["status"] == "degraded"


async def test_unsigned_fee_note_is_refused_without_a_signer(cns_api: Api) -> None:
    # This daemon has no signing key: it cannot sign, and never fakes it.
    note_uuid = str(uuid.uuid4())
    status, problem = await deposit(cns_api, fee_note_xml(note_uuid))
    assert status == 422
    assert problem["code"] == "unsigned_document"
    assert "sign it first" in problem["detail"]
    missing = await cns_api.client.get(f"/v1/cns/messages/{note_uuid}", headers=cns_api.auth())
    assert missing.status == 404


async def test_unsigned_fee_note_is_signed_once_and_delivered_at_b_lt(
    api_factory: Callable[..., Awaitable[Api]],
    sandbox_services: SandboxPKI,
    real_cns_simulator: SimulatorThread,
    fee_note_pdf: bytes,
) -> None:
    api = await api_factory(
        sandbox_cns_settings(real_cns_simulator.url), sandbox_pki=sandbox_services
    )
    note_uuid = str(uuid.uuid4())
    body = unsigned_fee_note(note_uuid, fee_note_pdf)
    # Posted five times at once: one signature, one row, one booking.
    results = await asyncio.gather(*(deposit(api, body) for _ in range(5)))
    assert {status for status, _ in results} == {202}
    assert {answer["uuid"] for _, answer in results} == {note_uuid}
    message = await wait_status(api, note_uuid, {"delivered", "rejected", "failed"})
    assert message["status"] == "delivered", message
    assert message["level"] == "B-LT"

    outbox = api.client.app[SERVICES].cns.outbox
    stored = (await outbox.run(outbox.get, note_uuid, with_body=True)).body
    booked = real_cns_simulator.simulator.bookings[note_uuid]
    assert booked == stored != body
    await verify_b_lt(booked, sandbox_services)
    # The recipe signed the embedded PDF/A too (PAdES), and kept the caller's UUID.
    root = etree.fromstring(booked)
    assert root.findtext(f"{FN}UUID") == note_uuid
    assert b"/ByteRange" in base64.b64decode(root.findtext(f"{FN}Document") or "")

    # Re-posting the same unsigned body: the first answer, not a second signature.
    again, answer = await deposit(api, body)
    assert again == 202 and answer["status"] == "delivered"
    assert (await outbox.run(outbox.get, note_uuid, with_body=True)).body == stored
    assert real_cns_simulator.simulator.booking_counts[note_uuid] == 1
    assert counter(api, "sidecar_signatures", format="xades", level="B-LT") == 1
    assert counter(api, "sidecar_signatures", format="pades", level="B-B") == 1
    assert counter(api, "sidecar_cns_messages", operation="deposit", result="delivered") == 1
    assert counter(api, "sidecar_upstream_requests", upstream="cns", outcome="ok") >= 1

    # The journal holds the daemon's own signature, with its key and level.
    journal = api.client.app[SERVICES].journal
    signed = [e for e in journal.entries() if e.operation == "sign.fee-note"]
    assert len(signed) == 1
    # One entry for the deposit's signature, naming who deposited it (#14: every
    # signature is one event, written by the signing operation).
    assert (signed[0].uuid, signed[0].key_id, signed[0].level, signed[0].client) == (
        note_uuid,
        "sandbox-rsa",
        "B-LT",
        "all",
    )
    assert journal.verify().ok


async def test_fee_notes_the_recipe_or_the_cns_refuses(
    api_factory: Callable[..., Awaitable[Api]],
    sandbox_services: SandboxPKI,
    real_cns_simulator: SimulatorThread,
    fee_note_pdf: bytes,
    fee_notes: FeeNotes,
) -> None:
    api = await api_factory(
        sandbox_cns_settings(real_cns_simulator.url), sandbox_pki=sandbox_services
    )
    # Against the profile's XSD (Total is a decimal): refused before signing, nothing queued.
    bad = str(uuid.uuid4())
    status, problem = await deposit(api, unsigned_fee_note(bad, fee_note_pdf, total="lots"))
    assert status == 422 and problem["code"] == "schema_violation", problem
    assert problem["profile"] == "fee-note" and problem["errors"]
    # The profile wants the PDF/A: a deposit without it embedded is refused.
    no_pdf = str(uuid.uuid4())
    status, problem = await deposit(api, unsigned_fee_note(no_pdf, None))
    assert status == 400 and problem["parameter"] == "pdf", problem
    assert "Document" in problem["detail"]
    # No UUID: the daemon does not make one up (a re-post would be a second fee note).
    status, problem = await deposit(api, unsigned_fee_note("", fee_note_pdf))
    assert status == 422 and problem["code"] == "invalid_uuid"
    for note_uuid in (bad, no_pdf):
        missing = await api.client.get(f"/v1/cns/messages/{note_uuid}", headers=api.auth())
        assert missing.status == 404
    assert counter(api, "sidecar_signatures", format="xades", level="B-LT") == 0

    # Signed by the caller, but plain XMLDSig in another format: the CNS (our verifier
    # and the profile's XSD in the simulator) refuses it, with its reasons.
    note_uuid, stand_in = fee_notes.make()
    assert (await deposit(api, stand_in))[0] == 202
    message = await wait_status(api, note_uuid, {"rejected", "delivered", "failed"})
    assert message["status"] == "rejected"
    assert message["reasons"][0]["code"] == "XSD"
    assert not real_cns_simulator.simulator.bookings


async def test_bad_documents(cns_api: Api, fee_notes: FeeNotes) -> None:
    status, problem = await deposit(cns_api, b"<FeeNote>\n  <UUID>x</UUID>\n  <oops></FeeNote>")
    assert status == 400 and problem["code"] == "malformed_xml"
    assert problem["line"] == 3 and problem["column"] > 0

    dtd = b'<!DOCTYPE FeeNote [<!ENTITY x SYSTEM "file:///etc/passwd">]><FeeNote>&x;</FeeNote>'
    status, problem = await deposit(cns_api, dtd)
    assert status == 422 and problem["code"] == "forbidden_dtd"
    assert "passwd" not in str(problem)

    # Version 1 (time-based) UUID: not what DSR 3.6.2 asks for.
    _, v1 = fee_notes.make(str(uuid.uuid1()))
    status, problem = await deposit(cns_api, v1)
    assert status == 422 and problem["code"] == "invalid_uuid"

    status, problem = await deposit(cns_api, b"<FeeNote><Provider>1</Provider></FeeNote>")
    assert status == 422 and problem["code"] == "invalid_uuid"


async def test_uuid_in_root_attribute(cns_api: Api, fee_notes: FeeNotes) -> None:
    note_uuid = str(uuid.uuid4())
    signed = fee_notes.sign(f'<Note uuid="{note_uuid.upper()}"><A>1</A></Note>'.encode())
    status, accepted = await deposit(cns_api, signed)
    assert status == 202 and accepted["uuid"] == note_uuid


async def test_listing_filters_and_pages(cns_api: Api, fee_notes: FeeNotes) -> None:
    made = [fee_notes.make()[0] for _ in range(3)]
    for note_uuid in made:
        assert (await deposit(cns_api, fee_notes.make(note_uuid)[1]))[0] == 202
    for note_uuid in made:
        await wait_status(cns_api, note_uuid, {"delivered"})
    page = await (
        await cns_api.client.get("/v1/cns/messages?limit=2", headers=cns_api.auth())
    ).json()
    assert [m["uuid"] for m in page["messages"]] == made[:2]
    rest = await (await cns_api.client.get(page["next"], headers=cns_api.auth())).json()
    assert [m["uuid"] for m in rest["messages"]] == made[2:]
    for query, expected in (
        ("status=delivered", made),
        ("status=queued", []),
        ("since=2999-01-01T00:00:00Z", []),
        ("since=2000-01-01T00:00:00%2B02:00", made),
    ):
        body = await (
            await cns_api.client.get(f"/v1/cns/messages?{query}", headers=cns_api.auth())
        ).json()
        assert [m["uuid"] for m in body["messages"]] == expected, query
    for bad in ("status=lost", "since=yesterday", "limit=0"):
        response = await cns_api.client.get(f"/v1/cns/messages?{bad}", headers=cns_api.auth())
        assert response.status == 400
        assert (await response.json())["code"] == "bad_parameter"


async def test_forward_scope_is_required(cns_api: Api, fee_notes: FeeNotes) -> None:
    _, body = fee_notes.make()
    response = await cns_api.client.post(
        "/v1/cns/fee-notes",
        data=body,
        headers={**cns_api.auth("signer"), "Content-Type": "application/xml"},
    )
    assert response.status == 403


async def test_health_reports_cns_and_outbox(cns_api: Api) -> None:
    # The "all" client holds the admin scope: it sees each check.
    response = await cns_api.client.get("/v1/health", headers=cns_api.auth("all"))
    checks = {c["name"]: c for c in (await response.json())["checks"]}
    assert checks["cns"]["status"] == "ok"
    assert checks["outbox"]["status"] == "ok"
    assert checks["outbox"]["data"] == {"depth": 0, "oldest_pending_seconds": 0.0, "failed": 0}
