"""XAdES signatures at every level, with both key backends and both key types,
checked by xmlsec1, xadesjs, openssl ts and our own validator."""

from __future__ import annotations

import base64

import pytest
from lxml import etree

from sidecar.sandbox import SandboxPKI
from sidecar.signing.report import Indication, Level
from sidecar.signing.xades_verify import VerificationPolicy, verify_xml
from sidecar.signing.xmldsig import C14N_EXCL, c14n, ds, xades
from sidecar.trust import TrustServices
from tests.fixtures.xades import (
    FORM,
    FORM_XADESJS,
    KINDS,
    LEVELS,
    SignXml,
    openssl_ts_verify,
    xadesjs_verify,
    xmlsec1_verify,
)

MATRIX = [(kind, level) for kind in KINDS for level in LEVELS]


def _signature(document: bytes) -> etree._Element:
    root = etree.fromstring(document)
    (signature,) = root.iter(ds("Signature"))
    return signature


@pytest.mark.parametrize(("kind", "level"), MATRIX, ids=[f"{k}-{v}" for k, v in MATRIX])
async def test_sign_and_check(
    kind: str,
    level: Level,
    signed_xml: SignXml,
    sandbox_services: SandboxPKI,
    xades_trust: TrustServices,
) -> None:
    document = await signed_xml(kind, level)

    done = xmlsec1_verify(document, sandbox_services.roots_pem)
    assert done.returncode == 0 and "OK" in done.stderr, done.stdout + done.stderr

    signature = _signature(document)
    stamps = signature.findall(f".//{xades('SignatureTimeStamp')}")
    assert len(stamps) == (0 if level == Level.B_B else 1)
    carried = [
        base64.b64decode(e.text)
        for e in signature.iter(ds("X509Certificate"), xades("EncapsulatedX509Certificate"))
    ]
    for stamp in stamps:
        token = base64.b64decode(stamp.findtext(xades("EncapsulatedTimeStamp")))
        value = signature.find(ds("SignatureValue"))
        imprinted = c14n(value, C14N_EXCL)
        done = openssl_ts_verify(imprinted, token, sandbox_services.roots_pem, carried)
        assert done.returncode == 0 and "OK" in done.stdout, done.stdout + done.stderr
        # One byte more and the imprint no longer matches.
        done = openssl_ts_verify(imprinted + b" ", token, sandbox_services.roots_pem, carried)
        assert done.returncode != 0

    (report,) = await verify_xml(
        document, VerificationPolicy(trust_roots=xades_trust.anchors.certificates)
    )
    assert report.level == level, report
    if level in (Level.B_LT, Level.B_LTA):
        assert report.indication == Indication.TOTAL_PASSED, report
        assert report.offline_validation_data
    else:
        # Nothing embedded to check revocation with, and no fetching: indeterminate.
        assert report.indication == Indication.INDETERMINATE, report
        assert not report.offline_validation_data
    assert report.signer is not None and "Sandbox" in report.signer


async def test_xadesjs_accepts_every_signature(signed_xml: SignXml) -> None:
    # FORM_XADESJS: see its comment for the two xadesjs canonicalization bugs it avoids.
    documents = [await signed_xml(kind, level, FORM_XADESJS) for kind, level in MATRIX]
    results = xadesjs_verify(documents)
    assert len(results) == len(MATRIX)
    for (kind, level), result in zip(MATRIX, results, strict=True):
        (signature,) = result["signatures"]
        assert signature["valid"] is True, (kind, level, signature)
        assert signature["signedProperties"] is True
        expected = {
            Level.B_B: [],
            Level.B_T: ["SignatureTimeStamp"],
            Level.B_LT: ["SignatureTimeStamp", "CertificateValues", "RevocationValues"],
            Level.B_LTA: ["SignatureTimeStamp", "CertificateValues", "RevocationValues"],
        }[level]
        # xades141:ArchiveTimeStamp is taken out before xadesjs parses (verify.js says why).
        assert result["xades141"] == (["ArchiveTimeStamp"] if level == Level.B_LTA else [])
        assert signature["unsigned"] == expected, (kind, level, signature)
        assert signature["timestamps"] == sum(1 for name in expected if "TimeStamp" in name)


async def test_document_untouched_outside_the_signature(signed_xml: SignXml) -> None:
    document = await signed_xml("pkcs12-rsa", Level.B_LT)
    start = document.index(b"<ds:Signature")
    end = document.index(b"</ds:Signature>") + len(b"</ds:Signature>")
    # Exactly the original bytes around the signature, ISO-8859-1 kept, nothing reformatted.
    assert document[:start] + document[end:] == FORM
    assert document[start:end].decode("iso-8859-1").isascii()
    # The signature is the last child of the root.
    root = etree.fromstring(document)
    assert root[-1].tag == ds("Signature")
