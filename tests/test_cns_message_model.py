"""One model of a CNS message: the UUID is where one rule says, before and after signing.

A practice whose fee-note schema names the UUID element otherwise (here ``NoteId``, as
the CNS's real schema may) configures a ``fee-note`` profile saying so, and possibly
``[cns] uuid_xpath``: an unsigned fee note is then signed, delivered and booked under
its own UUID — never answered 500 "signing changed the fee note's UUID", never 422.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from lxml import etree

from sidecar.api.appkeys import SERVICES
from sidecar.cns.documents import InvalidUuid, MessageRule, read_message
from sidecar.cns.simulator import CnsSimulator, xades_verifier
from sidecar.config import SigningSettings
from sidecar.sandbox import SandboxPKI
from sidecar.signing.profiles import BUNDLED_PROFILE_DIR, ProfileRegistry
from sidecar.signing.report import Level
from sidecar.signing.xml_safety import ForbiddenDtd, MalformedXml
from tests.fixtures.cns import SimulatorThread, sandbox_cns_settings, unsigned_fee_note, wait_status
from tests.fixtures.daemon import Api
from tests.test_cns_api import deposit, verify_b_lt

FN = "{urn:sidecar:standin:cns:fee-note:1}"
#: ``[cns] uuid_xpath`` naming the element that is not called UUID.
NOTE_ID_XPATH = "/*[local-name()='FeeNote']/*[local-name()='NoteId']"


@pytest.fixture(scope="module")
def note_id_profiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``fee-note`` profile (replacing the bundled one) whose UUID element is ``NoteId``."""
    folder = tmp_path_factory.mktemp("note-id-profiles")
    (folder / "xsd").mkdir()
    xsd = (BUNDLED_PROFILE_DIR / "xsd" / "fee-note.xsd").read_text(encoding="utf-8")
    assert xsd.count('<xs:element name="UUID"') == 1
    (folder / "xsd" / "fee-note.xsd").write_text(
        xsd.replace('<xs:element name="UUID"', '<xs:element name="NoteId"'), encoding="utf-8"
    )
    toml = (BUNDLED_PROFILE_DIR / "fee-note.toml").read_text(encoding="utf-8")
    toml = toml.replace('xpath = "/fn:FeeNote/fn:UUID"', 'xpath = "/fn:FeeNote/fn:NoteId"')
    toml = "\n".join(line for line in toml.splitlines() if not line.startswith("samples"))
    (folder / "fee-note.toml").write_text(toml, encoding="utf-8")
    return folder


@pytest.fixture
def note_id_simulator(sandbox_pki: SandboxPKI, note_id_profiles: Path) -> Iterator[SimulatorThread]:
    """The CNS, as it knows its own schema: the NoteId XSD, XAdES at B-LT, UUID in NoteId."""

    def note_id(root: etree._Element) -> str | None:
        return root.findtext(f"{FN}NoteId")

    simulator = CnsSimulator(
        xsd=note_id_profiles / "xsd" / "fee-note.xsd",
        verifier=xades_verifier(sandbox_pki.roots_pem),
        seed=7,
        uuid_reader=note_id,
    )
    thread = SimulatorThread(simulator).start()
    yield thread
    thread.stop()


def note_id_fee_note(note_uuid: str, pdf: bytes) -> bytes:
    body = unsigned_fee_note(note_uuid, pdf)
    return body.replace(b"<UUID>", b"<NoteId>").replace(b"</UUID>", b"</NoteId>")


@pytest.mark.parametrize("uuid_xpath", [NOTE_ID_XPATH, ""], ids=["cns-uuid-xpath", "profile"])
async def test_unsigned_fee_note_with_its_uuid_elsewhere_is_delivered(
    uuid_xpath: str,
    api_factory: Callable[..., Awaitable[Api]],
    sandbox_services: SandboxPKI,
    note_id_simulator: SimulatorThread,
    note_id_profiles: Path,
    fee_note_pdf: bytes,
) -> None:
    settings = sandbox_cns_settings(note_id_simulator.url, uuid_xpath=uuid_xpath)
    settings = dataclasses.replace(
        settings, signing=SigningSettings(profile_dirs=(note_id_profiles,))
    )
    api = await api_factory(settings, sandbox_pki=sandbox_services)
    note_uuid = str(uuid.uuid4())
    body = note_id_fee_note(note_uuid, fee_note_pdf)
    assert b"<UUID>" not in body and f"<NoteId>{note_uuid}</NoteId>".encode() in body

    status, accepted = await deposit(api, body)
    assert status == 202, accepted
    assert accepted["uuid"] == note_uuid
    message = await wait_status(api, note_uuid, {"delivered", "rejected", "failed"})
    assert message["status"] == "delivered", message
    assert message["level"] == "B-LT"

    booked = note_id_simulator.simulator.bookings[note_uuid]
    outbox = api.client.app[SERVICES].cns.outbox
    assert (await outbox.run(outbox.get, note_uuid, with_body=True)).body == booked != body
    assert etree.fromstring(booked).findtext(f"{FN}NoteId") == note_uuid  # unchanged
    await verify_b_lt(booked, sandbox_services)
    assert note_id_simulator.simulator.booking_counts[note_uuid] == 1


# -- the model itself, without a daemon ------------------------------------------------


def rule(uuid_xpath: str = "") -> MessageRule:
    return MessageRule.of(uuid_xpath, ProfileRegistry.load([BUNDLED_PROFILE_DIR]))


def test_the_profile_says_where_the_uuid_is_for_its_documents() -> None:
    note_uuid, decoy = str(uuid.uuid4()), str(uuid.uuid4())
    # A MessageId before the profile's UUID element: the name rule would take it.
    body = unsigned_fee_note(note_uuid, b"%PDF-1.7").replace(
        b"<UUID>", f"<MessageId xmlns=''>{decoy}</MessageId><UUID>".encode(), 1
    )
    note = read_message(body, rule())
    assert note.uuid == note_uuid
    assert note.level is None and note.required == Level.B_LT
    # The operator's [cns] uuid_xpath comes first.
    assert read_message(body, rule("//MessageId")).uuid == decoy
    # An empty UUID element: the daemon makes none up, and says where it looked.
    with pytest.raises(InvalidUuid, match=r"at /fn:FeeNote/fn:UUID \(profile 'fee-note'\)"):
        read_message(unsigned_fee_note("", b"%PDF-1.7"), rule())


def test_other_messages_by_name_then_root_attribute() -> None:
    note_uuid = str(uuid.uuid4())
    nested = f"<PidRequest><Header><UUID> {note_uuid.upper()} </UUID></Header></PidRequest>"
    assert read_message(nested.encode(), rule()).uuid == note_uuid
    assert read_message(f'<Note Id="{note_uuid}"/>'.encode(), rule()).uuid == note_uuid
    with pytest.raises(InvalidUuid, match="carries no UUID"):
        read_message(b"<Note><A>1</A></Note>", rule())
    with pytest.raises(InvalidUuid, match="version-4"):
        read_message(f"<Note uuid='{uuid.uuid1()}'/>".encode(), rule())
    with pytest.raises(InvalidUuid, match="cannot be evaluated"):
        read_message(f"<Note uuid='{note_uuid}'/>".encode(), rule("//*["))


def test_the_one_parser_refuses_for_the_cns_too() -> None:
    with pytest.raises(ForbiddenDtd):
        read_message(b'<!DOCTYPE a [<!ENTITY x "y">]><a uuid="x">&x;</a>', rule())
    with pytest.raises(MalformedXml) as caught:
        read_message(b"<a>\n<b></a>", rule())
    assert caught.value.line == 2


def test_levels_are_read_by_the_xades_engine() -> None:
    xades = "http://uri.etsi.org/01903/v1.3.2#"
    ds = "http://www.w3.org/2000/09/xmldsig#"
    note_uuid = str(uuid.uuid4())

    def signed(*unsigned: str) -> bytes:
        props = "".join(f"<x:{name}/>" for name in unsigned)
        return (
            f'<Note xmlns:ds="{ds}" xmlns:x="{xades}" uuid="{note_uuid}"><ds:Signature>'
            "<ds:Object><x:QualifyingProperties><x:UnsignedProperties>"
            f"<x:UnsignedSignatureProperties>{props}</x:UnsignedSignatureProperties>"
            "</x:UnsignedProperties></x:QualifyingProperties></ds:Object>"
            "</ds:Signature></Note>"
        ).encode()

    assert read_message(signed(), rule()).level == Level.B_B
    assert read_message(signed("SignatureTimeStamp"), rule()).level == Level.B_T
    lt = ("SignatureTimeStamp", "CertificateValues", "RevocationValues")
    assert read_message(signed(*lt), rule()).level == Level.B_LT
    # XAdES 1.3.2's own ArchiveTimeStamp is B-LTA as the v1.4.1 one is.
    assert read_message(signed(*lt, "ArchiveTimeStamp"), rule()).level == Level.B_LTA
