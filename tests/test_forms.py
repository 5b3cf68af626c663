"""The fee-note recipe end to end over HTTP, and the other profiles' recipe paths."""

from __future__ import annotations

import base64
import io
import re

import aiohttp
import pytest
from asn1crypto import x509 as asn1_x509
from lxml import etree

from sidecar.sandbox import SandboxPKI
from sidecar.signing.forms import embedded_pdf
from sidecar.signing.pades_verify import verify_pdf
from sidecar.signing.pdf_checks import inspect_pdf
from sidecar.signing.profiles import BUNDLED_PROFILE_DIR, ProfileRegistry, validate_xml
from sidecar.signing.report import Level
from sidecar.signing.xml_safety import parse_xml
from tests.fixtures.daemon import Api
from tests.fixtures.pades import pdfsig_report
from tests.fixtures.xades import xadesjs_verify, xmlsec1_verify

SAMPLES = BUNDLED_PROFILE_DIR / "samples"
FEE_NOTE_XML = (SAMPLES / "fee-note.xml").read_bytes()
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
FN = {"fn": "urn:sidecar:standin:cns:fee-note:1"}


def _form(xml: bytes, pdf: bytes | None) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("xml", xml, filename="fee-note.xml", content_type="application/xml")
    if pdf is not None:
        form.add_field("pdf", pdf, filename="fee-note.pdf", content_type="application/pdf")
    return form


async def test_fee_note_recipe(
    sandbox_api: Api,
    fee_note_pdf: bytes,
    sandbox_services: SandboxPKI,
    sandbox_roots: list[asn1_x509.Certificate],
) -> None:
    response = await sandbox_api.client.post(
        "/v1/forms/fee-note/sign",
        data=_form(FEE_NOTE_XML, fee_note_pdf),
        headers=sandbox_api.auth("signer"),
    )
    assert response.status == 200, await response.text()
    assert response.headers["X-Signature-Level"] == "B-LT"
    assert response.headers["X-Pdf-Signature-Level"] == "B-B"
    signed = await response.read()

    # The UUID was filled with a v4 UUID, and it is the one announced.
    tree = etree.parse(io.BytesIO(signed))
    (uuid,) = tree.xpath("/fn:FeeNote/fn:UUID/text()", namespaces=FN)
    assert UUID4.match(uuid) and response.headers["X-Form-UUID"] == uuid

    # The result passes the profile's XSD.
    registry = ProfileRegistry.load([BUNDLED_PROFILE_DIR])
    profile = registry.get("fee-note")
    assert profile is not None
    parsed = parse_xml(signed)
    assert validate_xml(parsed.tree, profile, parsed.data) == []

    # XMLDSig core and chain: xmlsec1; XAdES core incl. SignedProperties: xadesjs.
    checked = xmlsec1_verify(signed, sandbox_services.roots_pem)
    assert checked.returncode == 0, checked.stderr
    (result,) = xadesjs_verify([signed])
    (signature,) = result["signatures"]
    assert signature["valid"] is True, signature
    assert {"SignatureTimeStamp", "CertificateValues", "RevocationValues"} <= set(
        signature["unsigned"]
    )

    # Our verify: the XML signature at B-LT.
    response = await sandbox_api.client.post(
        "/v1/verify",
        data=signed,
        headers={"Content-Type": "application/xml", **sandbox_api.auth("verifier")},
    )
    assert response.status == 200, await response.text()
    report = await response.json()
    (xml_signature,) = report["signatures"]
    assert xml_signature["level"] == "B-LT" and xml_signature["indication"] == "TOTAL_PASSED"
    # ...and the form's embedded PDF, reported with it.
    assert report["profile"] == "fee-note"
    (embedded_signature,) = report["embedded_pdf"]["signatures"]
    assert embedded_signature["format"] == "PAdES" and embedded_signature["level"] == "B-B"
    assert embedded_signature["details"]["intact"] is True

    # The embedded PDF: still PDF/A-2b, and PAdES-B by poppler and by us.
    found = embedded_pdf(parsed.tree, registry)
    assert found is not None
    _, pdf = found
    assert pdf.startswith(fee_note_pdf)
    assert inspect_pdf(pdf).pdfa == "2B"
    assert "Signature is Valid" in pdfsig_report(pdf)
    (pdf_report,) = await verify_pdf(pdf, trust_roots=sandbox_roots)
    assert pdf_report.level is Level.B_B and pdf_report.details["intact"]


async def test_pdf_already_embedded_and_uuid_kept(sandbox_api: Api, fee_note_pdf: bytes) -> None:
    own_uuid = "0b8f3a52-7c1e-4d0a-9f6b-2e5d8c4a1b3f"
    xml = FEE_NOTE_XML.replace(b"<UUID></UUID>", f"<UUID>{own_uuid}</UUID>".encode()).replace(
        b'<Document mimeType="application/pdf"></Document>',
        b'<Document mimeType="application/pdf">' + base64.b64encode(fee_note_pdf) + b"</Document>",
    )
    response = await sandbox_api.client.post(
        "/v1/forms/fee-note/sign",
        data=xml,
        headers={"Content-Type": "application/xml", **sandbox_api.auth("signer")},
    )
    assert response.status == 200, await response.text()
    assert response.headers["X-Form-UUID"] == own_uuid
    tree = etree.parse(io.BytesIO(await response.read()))
    (embedded,) = tree.xpath("/fn:FeeNote/fn:Document/text()", namespaces=FN)
    pdf = base64.b64decode(embedded)
    assert pdf.startswith(fee_note_pdf) and len(pdf) > len(fee_note_pdf)


async def test_schema_violation_lists_every_error(sandbox_api: Api, fee_note_pdf: bytes) -> None:
    bad = FEE_NOTE_XML.replace(
        b"<Matricule>1980010112345</Matricule>", b"<Matricule>12</Matricule>"
    ).replace(b"<Quantity>1</Quantity>", b"<Quantity>-1</Quantity>", 1)
    response = await sandbox_api.client.post(
        "/v1/forms/fee-note/sign", data=_form(bad, fee_note_pdf), headers=sandbox_api.auth("signer")
    )
    assert response.status == 422
    problem = await response.json()
    assert problem["code"] == "schema_violation" and problem["stage"] == "input"
    lines = bad.decode().splitlines()
    assert len(problem["errors"]) == 2
    for error, tag in zip(problem["errors"], ("<Matricule>", "<Quantity>"), strict=True):
        assert lines[error["line"] - 1][error["column"] - 1 :].startswith(tag)
        assert error["message"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("no-pdf", 400, "bad_parameter"),
        ("plain-pdf", 422, "unsupported_pdf"),
        ("dtd", 422, "forbidden_dtd"),
        ("bad-base64", 400, "malformed_pdf"),
    ],
)
async def test_refusals(sandbox_api: Api, make_pdfa, body: str, status: int, code: str) -> None:
    xml, pdf = FEE_NOTE_XML, None
    if body == "plain-pdf":
        pdf = make_pdfa(pdfa_part=None)
    elif body == "dtd":
        xml = FEE_NOTE_XML.replace(
            b"<FeeNote", b'<!DOCTYPE FeeNote [<!ENTITY x "y">]>\n<FeeNote', 1
        )
        pdf = make_pdfa()
    elif body == "bad-base64":
        xml = FEE_NOTE_XML.replace(b"></Document>", b">@@not base64@@</Document>")
    response = await sandbox_api.client.post(
        "/v1/forms/fee-note/sign", data=_form(xml, pdf), headers=sandbox_api.auth("signer")
    )
    problem = await response.json()
    assert (response.status, problem["code"]) == (status, code), problem


async def test_pid_profile_fills_uuid_without_signing(sandbox_api: Api) -> None:
    xml = (SAMPLES / "pid-simulation.xml").read_bytes()
    response = await sandbox_api.client.post(
        "/v1/forms/pid-simulation/sign",
        data=xml,
        headers={"Content-Type": "application/xml", **sandbox_api.auth("signer")},
    )
    assert response.status == 200, await response.text()
    assert response.headers["X-Signature-Level"] == "none"
    body = await response.read()
    assert UUID4.match(response.headers["X-Form-UUID"])
    assert b"Signature" not in body


async def test_unknown_profile(sandbox_api: Api) -> None:
    response = await sandbox_api.client.post(
        "/v1/forms/nope/sign",
        data=FEE_NOTE_XML,
        headers={"Content-Type": "application/xml", **sandbox_api.auth("signer")},
    )
    assert response.status == 404
