"""The CNS simulator on its own: XSD, signature verifier seam, UUID memory, faults."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest
from lxml import etree
from signxml import XMLVerifier

from sidecar.cns.simulator import (
    CnsSimulator,
    check_signature_present,
    serve_simulator,
    xades_verifier,
)
from sidecar.keys import Signer
from sidecar.sandbox import SandboxPKI
from sidecar.signing.report import Level
from sidecar.signing.trust_binding import TrustTimestampSource, TrustValidationDataSource
from sidecar.signing.xades import sign_xml
from sidecar.trust import TrustServices
from tests.fixtures.cns import FeeNotes, fee_note_profile_xsd, fee_note_xml, unsigned_fee_note


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


async def test_kept_keys_are_bounded_and_still_deduplicate(
    fee_notes: FeeNotes, stand_in_xsd: Path
) -> None:
    # The sandbox's simulator grew ~1 KiB per deposit without end (#19): its answers
    # and counts keep the last ``kept_keys`` keys, and deduplicate those as before.
    simulator = CnsSimulator(xsd=stand_in_xsd, kept_keys=4)
    notes = [fee_notes.make() for _ in range(7)]
    async with serve_simulator(simulator) as url:
        answers = [await send(url, body, note_uuid) for note_uuid, body in notes]
        newest_uuid, newest = notes[-1]
        again = await send(url, newest, newest_uuid)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/messages/{newest_uuid}") as looked_up,
        ):
            assert looked_up.status == 200
    assert all(status == 200 for status, _ in answers)
    assert again == answers[-1]  # replayed, not booked again
    assert simulator.booking_counts[newest_uuid] == 1
    assert simulator.requests[newest_uuid] == 2
    kept = [note_uuid for note_uuid, _ in notes[-4:]]
    for mapping in (simulator.answers, simulator.requests, simulator.booking_counts):
        assert list(mapping) == kept
    assert list(simulator.lookups) == [newest_uuid]


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


async def test_our_xades_verifier_and_the_profile_xsd(
    xades_signers: dict[str, Signer],
    xades_trust: TrustServices,
    sandbox_pki: SandboxPKI,
    fee_notes: FeeNotes,
) -> None:
    """What the sandbox's simulator checks: the fee-note XSD, then XAdES TOTAL_PASSED
    at B-LT or above with our verifier and the sandbox's roots."""

    async def fee_note(level: Level) -> tuple[str, bytes]:
        note_uuid = str(uuid.uuid4())
        signed = await sign_xml(
            unsigned_fee_note(note_uuid, None),
            xades_signers["pkcs12-rsa"],
            level,
            timestamps=TrustTimestampSource(xades_trust.tsa),
            validation_data=TrustValidationDataSource(xades_trust.revocation),
        )
        return note_uuid, signed

    simulator = CnsSimulator(
        xsd=fee_note_profile_xsd(), verifier=xades_verifier(sandbox_pki.roots_pem)
    )
    async with serve_simulator(simulator) as url:
        good_uuid, good = await fee_note(Level.B_LT)
        assert (await send(url, good, good_uuid))[0] == 200

        b_b_uuid, b_b = await fee_note(Level.B_B)
        status, answer = await send(url, b_b, b_b_uuid)
        assert status == 422
        # Offline, with no revocation data embedded, a B-B cannot be decided.
        assert reasons(answer)[0][0] == "SIGNATURE"
        assert "INDETERMINATE/TRY_LATER" in str(reasons(answer)[0][1])

        tampered_uuid, signed = await fee_note(Level.B_LT)
        tampered = signed.replace(b">83.85</Total>", b">93.85</Total>")
        status, answer = await send(url, tampered, tampered_uuid)
        assert status == 422 and reasons(answer)[0][0] == "SIGNATURE"
        assert "TOTAL_FAILED" in str(reasons(answer)[0][1])

        # Plain XMLDSig of a valid fee note: no XAdES, no timestamp, refused.
        plain_uuid = str(uuid.uuid4())
        plain = fee_notes.sign(unsigned_fee_note(plain_uuid, None))
        status, answer = await send(url, plain, plain_uuid)
        assert status == 422 and reasons(answer)[0][0] == "SIGNATURE"

        # The stand-in test format is not the profile's: the XSD refuses it first.
        stand_in_uuid, stand_in = fee_notes.make()
        status, answer = await send(url, stand_in, stand_in_uuid)
        assert status == 422 and reasons(answer)[0][0] == "XSD"
    assert list(simulator.bookings) == [good_uuid]
    # The minimum level is a setting: B-LTA refuses the B-LT one.
    stricter = xades_verifier(sandbox_pki.roots_pem, minimum="B-LTA")
    (reason,) = await stricter(good)  # type: ignore[misc]
    assert reason.endswith("level B-LT, B-LTA required")


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
