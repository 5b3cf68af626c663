"""The CNS simulator on its own: XSD, signature verifier seam, UUID memory, faults."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest
from lxml import etree
from signxml import XMLVerifier

from sidecar.cns.simulator import CnsSimulator, check_signature_present, serve_simulator
from tests.fixtures.cns import FeeNotes, fee_note_xml


async def send(url: str, body: bytes, key: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/fee-notes", data=body, headers={"Idempotency-Key": key}) as r,
    ):
        return r.status, await r.read()


def reasons(answer: bytes) -> list[tuple[str | None, str | None]]:
    return [(r.get("code"), r.text) for r in etree.fromstring(answer).iter("Reason")]


async def test_duplicate_gets_the_first_answer_and_no_second_booking(
    fee_notes: FeeNotes, stand_in_xsd: Path
) -> None:
    simulator = CnsSimulator(xsd=stand_in_xsd)
    note_uuid, body = fee_notes.make()
    async with serve_simulator(simulator) as url:
        first = await send(url, body, note_uuid)
        # Even with other content: the key was answered, the answer is replayed.
        _, other = fee_notes.make(note_uuid, amount="1.00")
        second, third = await asyncio.gather(
            send(url, body, note_uuid), send(url, other, note_uuid)
        )
    assert first[0] == 200 and first == second == third
    assert simulator.booking_counts[note_uuid] == 1
    assert simulator.requests[note_uuid] == 3


async def test_xsd_and_uuid_checks(fee_notes: FeeNotes, stand_in_xsd: Path) -> None:
    simulator = CnsSimulator(xsd=stand_in_xsd)
    async with serve_simulator(simulator) as url:
        note_uuid, bad_amount = fee_notes.make(amount="abc")
        status, answer = await send(url, bad_amount, note_uuid)
        assert status == 422 and reasons(answer)[0][0] == "XSD"
        note_uuid, body = fee_notes.make()
        status, answer = await send(url, body, str(uuid.uuid4()))
        assert status == 422 and reasons(answer)[0][0] == "UUID"
    assert not simulator.bookings


def test_default_verifier_wants_a_well_formed_signature(fee_notes: FeeNotes) -> None:
    _, signed = fee_notes.make()
    assert check_signature_present(signed) == []
    assert check_signature_present(fee_note_xml(str(uuid.uuid4()))) == ["no ds:Signature"]
    broken = signed.replace(b"<ds:SignatureValue>", b"<ds:SignatureValue>!!")
    assert check_signature_present(broken) == ["ds:SignatureValue missing or not base64"]


async def test_a_real_verifier_plugs_in(fee_notes: FeeNotes, stand_in_xsd: Path) -> None:
    # What the XAdES engine's verifier will do, here signxml with the signer's certificate.
    def verify(document: bytes) -> list[str]:
        try:
            XMLVerifier().verify(document, x509_cert=fee_notes.cert_pem.decode())
        except Exception as exc:
            return [f"signature invalid: {type(exc).__name__}"]
        return []

    simulator = CnsSimulator(xsd=stand_in_xsd, verifier=verify)
    async with serve_simulator(simulator) as url:
        note_uuid, signed = fee_notes.make()
        assert (await send(url, signed, note_uuid))[0] == 200
        other_uuid, other = fee_notes.make(amount="52.10")
        tampered = other.replace(b'amount="52.10"', b'amount="520.10"')
        status, answer = await send(url, tampered, other_uuid)
    assert status == 422 and reasons(answer)[0][0] == "SIGNATURE"
    assert list(simulator.bookings) == [note_uuid]


async def test_faults(fee_notes: FeeNotes) -> None:
    simulator = CnsSimulator()
    async with serve_simulator(simulator) as url:
        simulator.faults.statuses = [503, 500]
        note_uuid, body = fee_notes.make()
        assert (await send(url, body, note_uuid))[0] == 503
        assert (await send(url, body, note_uuid))[0] == 500
        assert note_uuid not in simulator.bookings  # nothing processed

        simulator.faults.drop_after_read = 1
        with pytest.raises(aiohttp.ClientError):
            await send(url, body, note_uuid)
        assert note_uuid not in simulator.bookings

        simulator.faults.drop_after_booking = 1
        with pytest.raises(aiohttp.ClientError):
            await send(url, body, note_uuid)
        assert simulator.booking_counts[note_uuid] == 1  # booked, answer lost
        assert (await send(url, body, note_uuid))[0] == 200  # the re-send: first answer
        assert simulator.booking_counts[note_uuid] == 1

        simulator.faults.drip_seconds = 0.3
        other_uuid, other = fee_notes.make()
        status, answer = await send(url, other, other_uuid)
        assert status == 200 and b"<Status>booked</Status>" in answer
    assert simulator.dropped == 2
