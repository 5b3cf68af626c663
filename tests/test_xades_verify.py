"""Our XAdES validator against tampering, an untrusted root, and without any network."""

from __future__ import annotations

import base64
import socket

import pytest
from lxml import etree

from sidecar.keys import Signer
from sidecar.sandbox import SandboxPKI
from sidecar.signing.report import Indication, Level, SubIndication
from sidecar.signing.xades import AlreadySigned, PlacementError, XadesOptions, sign_xml
from sidecar.signing.xades_verify import VerificationPolicy, verify_xml
from sidecar.signing.xmldsig import C14N_EXCL, c14n, ds, xades
from sidecar.trust import TrustServices, load_certificates
from tests.fixtures.sandbox import MakeSandboxPKI
from tests.fixtures.xades import (
    FORM,
    FORM_XADESJS,
    SignXml,
    openssl_ts_verify,
    xadesjs_verify,
    xmlsec1_verify,
)


def _policy(trust: TrustServices) -> VerificationPolicy:
    return VerificationPolicy(trust_roots=trust.anchors.certificates)


def _flip_base64(document: bytes, start_marker: bytes, offset: int = 40) -> bytes:
    """Change one base64 character inside the element that starts with start_marker."""
    at = document.index(start_marker)
    at = document.index(b">", at) + offset
    old = document[at : at + 1]
    new = b"A" if old != b"A" else b"B"
    return document[:at] + new + document[at + 1 :]


def _tampered(document: bytes) -> dict[str, bytes]:
    return {
        # One byte of the signed data (42.00 -> 43.00).
        "data": document.replace(b">42.00<", b">43.00<", 1),
        # One byte of the SignedProperties: the signing time's seconds.
        "signed_properties": _signing_time_changed(document),
        "signature_value": _flip_base64(document, b"<ds:SignatureValue", 10),
        "timestamp": _flip_base64(document, b"<xades:EncapsulatedTimeStamp", 600),
    }


def _signing_time_changed(document: bytes) -> bytes:
    at = document.index(b"</xades:SigningTime>") - 2  # the seconds' last digit
    digit = document[at : at + 1]
    new = b"1" if digit != b"1" else b"2"
    return document[:at] + new + document[at + 1 :]


@pytest.mark.parametrize("where", ["data", "signed_properties", "signature_value", "timestamp"])
async def test_one_byte_changed_fails_everywhere(
    where: str, signed_xml: SignXml, xades_trust: TrustServices, sandbox_services: SandboxPKI
) -> None:
    original = await signed_xml("pkcs12-rsa", Level.B_LT)
    document = _tampered(original)[where]
    assert document != original

    (report,) = await verify_xml(document, _policy(xades_trust))
    assert report.indication == Indication.TOTAL_FAILED, report
    assert report.level == Level.NONE
    expected = {
        "data": SubIndication.HASH_FAILURE,
        "signed_properties": SubIndication.HASH_FAILURE,
        "signature_value": SubIndication.SIG_CRYPTO_FAILURE,
        "timestamp": None,  # a broken token: imprint or signature, whichever breaks first
    }[where]
    if expected is not None:
        assert report.sub_indication == expected, report

    core_applies = where != "timestamp"  # xmlsec1 checks the core only
    done = xmlsec1_verify(document, sandbox_services.roots_pem)
    assert (done.returncode != 0) == core_applies, done.stderr

    root = etree.fromstring(document)
    signature = next(root.iter(ds("Signature")))
    token = base64.b64decode(signature.findtext(f".//{xades('EncapsulatedTimeStamp')}"))
    value = signature.find(ds("SignatureValue"))
    carried = [base64.b64decode(e.text) for e in signature.iter(ds("X509Certificate"))]
    done = openssl_ts_verify(c14n(value, C14N_EXCL), token, sandbox_services.roots_pem, carried)
    ts_applies = where in ("signature_value", "timestamp")
    assert (done.returncode != 0) == ts_applies, done.stdout + done.stderr


async def test_xadesjs_sees_tampering(signed_xml: SignXml) -> None:
    original = await signed_xml("pkcs12-ec", Level.B_T, FORM_XADESJS)
    tampered = _tampered(original)
    results = xadesjs_verify(
        [original, tampered["data"], tampered["signed_properties"], tampered["signature_value"]]
    )
    assert [r["signatures"][0]["valid"] for r in results] == [True, False, False, False]


async def test_untrusted_root_is_indeterminate(
    signed_xml: SignXml, make_sandbox_pki: MakeSandboxPKI
) -> None:
    other = make_sandbox_pki()
    roots = load_certificates(other.roots_pem)
    (report,) = await verify_xml(
        await signed_xml("pkcs12-rsa", Level.B_LT), VerificationPolicy(trust_roots=roots)
    )
    assert report.indication == Indication.INDETERMINATE, report
    assert report.sub_indication == SubIndication.NO_CERTIFICATE_CHAIN_FOUND
    assert not report.offline_validation_data


async def test_b_lt_validates_with_no_network_at_all(
    signed_xml: SignXml, xades_trust: TrustServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    lt = await signed_xml("pkcs11-ec", Level.B_LT)
    lta = await signed_xml("pkcs11-rsa", Level.B_LTA)
    bt = await signed_xml("pkcs11-ec", Level.B_T)
    attempts: list[object] = []

    def refuse(sock: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network disabled by the test")

    # A fault no real part can produce on demand: the network gone for this process.
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    policy = VerificationPolicy(trust_roots=xades_trust.anchors.certificates)
    (lt_report,) = await verify_xml(lt, policy)
    (lta_report,) = await verify_xml(lta, policy)
    (bt_report,) = await verify_xml(bt, policy)
    assert lt_report.indication == Indication.TOTAL_PASSED, lt_report
    assert lt_report.level == Level.B_LT and lt_report.offline_validation_data
    assert lta_report.indication == Indication.TOTAL_PASSED and lta_report.level == Level.B_LTA
    # The B-T carries no revocation data: with no network it cannot be decided.
    assert bt_report.indication == Indication.INDETERMINATE
    assert bt_report.sub_indication == SubIndication.TRY_LATER
    assert bt_report.timestamp_time is not None


async def test_parallel_signatures(
    signed_xml: SignXml,
    xades_signers: dict[str, Signer],
    xades_trust: TrustServices,
    sandbox_services: SandboxPKI,
) -> None:
    once = await signed_xml("pkcs12-rsa", Level.B_B)
    with pytest.raises(AlreadySigned):
        await sign_xml(once, xades_signers["pkcs12-ec"], Level.B_B)
    with pytest.raises(AlreadySigned, match="invalidate"):
        # Signed without the parallel transform: a second signature would break it.
        await sign_xml(
            once, xades_signers["pkcs12-ec"], Level.B_B, XadesOptions(allow_parallel=True)
        )

    parallel = XadesOptions(allow_parallel=True)
    first = await signed_xml("pkcs12-rsa", Level.B_B, FORM, parallel)
    both = await sign_xml(first, xades_signers["pkcs11-ec"], Level.B_B, parallel)
    reports = await verify_xml(both, _policy(xades_trust))
    assert [r.level for r in reports] == [Level.B_B, Level.B_B]
    assert all(r.indication != Indication.TOTAL_FAILED for r in reports), reports
    assert {r.signer for r in reports} == {r.signer for r in reports} and len(
        {r.signer for r in reports}
    ) == 2
    # Each signature verifies with xmlsec1 alone (the XPath filter excludes the other).
    done = xmlsec1_verify(both, sandbox_services.roots_pem)
    assert done.returncode == 0, done.stderr


async def test_signature_placement(
    xades_signers: dict[str, Signer], xades_trust: TrustServices
) -> None:
    options = XadesOptions(
        placement="//fn:Amount/..", namespaces={"fn": "urn:sidecar:test:fee-note"}
    )
    document = await sign_xml(FORM, xades_signers["pkcs12-rsa"], Level.B_B, options)
    root = etree.fromstring(document)
    assert root[-1].tag == ds("Signature")
    empty = XadesOptions(placement="//*[local-name()='Empty']")
    document = await sign_xml(FORM, xades_signers["pkcs12-rsa"], Level.B_B, empty)
    assert b"<Empty><ds:Signature" in document and b"</ds:Signature></Empty>" in document
    (report,) = await verify_xml(document, _policy(xades_trust))
    assert report.level == Level.B_B and report.indication != Indication.TOTAL_FAILED
    with pytest.raises(PlacementError):
        await sign_xml(
            FORM, xades_signers["pkcs12-rsa"], Level.B_B, XadesOptions(placement="//nothing")
        )
