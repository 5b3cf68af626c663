"""XMLDSig features other signers use, in XAdES signatures made by xmlsec1.

Each document is a template that xmlsec1 (not our code) signs with the sandbox
signer's key; xmlsec1 verifies it; then our verifier must agree: the Base64
transform (XMLDSig 6.6.2, which every implementation must support), XPath Filter
2.0, the XPointers ``#xpointer(/)`` and ``#xpointer(id('X'))``, and SHA-1 — intact
but too weak to rely on, so INDETERMINATE / CRYPTO_CONSTRAINTS_FAILURE_NO_POE, never
TOTAL_FAILED. A byte changed in what a reference covers must still fail.

The signatures carry no timestamp and no revocation data, so the best verdict our
verifier can give is INDETERMINATE / TRY_LATER at level B-B (nothing wrong, the
signer's revocation status unknown offline): that is what "verifies" means here.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asn1crypto import pem, x509

from sidecar.sandbox import SandboxPKI
from sidecar.signing.report import Indication, Level, SignatureReport, SubIndication
from sidecar.signing.xades_verify import VerificationPolicy, verify_xml

DS = "http://www.w3.org/2000/09/xmldsig#"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
INCL_C14N_COMMENTS = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
BASE64 = "http://www.w3.org/2000/09/xmldsig#base64"
FILTER2 = "http://www.w3.org/2002/06/xmldsig-filter2"

PAYLOAD = b"%PDF-1.7 an attachment, carried in base64 \x00\x01\x02\xff"


def transform(algorithm: str, body: str = "") -> str:
    return f'<ds:Transform Algorithm="{algorithm}">{body}</ds:Transform>'


@dataclass(frozen=True)
class Feature:
    uri: str
    transforms: tuple[str, ...]
    digest: str = SHA256
    method: str = RSA_SHA256


FEATURES = {
    "base64": Feature("#payload", (transform(BASE64),)),
    "xpath-filter2": Feature(
        "",
        (
            transform(
                FILTER2,
                f'<f:XPath xmlns:f="{FILTER2}" Filter="subtract">'
                "here()/ancestor::ds:Signature[1]</f:XPath>",
            ),
            transform(EXC_C14N),
        ),
    ),
    "xpath-filter2-intersect": Feature(
        "",
        (
            transform(
                FILTER2,
                f'<f:XPath xmlns:f="{FILTER2}" Filter="intersect">id(\'data\')</f:XPath>'
                f'<f:XPath xmlns:f="{FILTER2}" Filter="subtract">/descendant::t:Secret</f:XPath>',
            ),
        ),
    ),
    "xpointer-root": Feature("#xpointer(/)", (transform(ENVELOPED), transform(INCL_C14N_COMMENTS))),
    "xpointer-id": Feature("#xpointer(id('data'))", (transform(INCL_C14N_COMMENTS),)),
    "sha1-digest": Feature("", (transform(ENVELOPED),), digest=SHA1),
    "sha1-signature": Feature("", (transform(ENVELOPED),), method=RSA_SHA1),
}


def template(feature: Feature, cert_der: bytes) -> bytes:
    cert_digest = base64.b64encode(hashlib.sha256(cert_der).digest()).decode()
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- made by xmlsec1 in the tests -->
<t:Doc xmlns:t="urn:sidecar:test:features">
  <t:Data Id="data">a fee note <!-- a comment inside --><t:Secret>hidden</t:Secret> 42.00</t:Data>
  <t:Payload Id="payload">{base64.b64encode(PAYLOAD).decode()}</t:Payload>
  <ds:Signature xmlns:ds="{DS}" Id="sig">
    <ds:SignedInfo>
      <ds:CanonicalizationMethod Algorithm="{EXC_C14N}"/>
      <ds:SignatureMethod Algorithm="{feature.method}"/>
      <ds:Reference URI="{feature.uri}">
        <ds:Transforms>{"".join(feature.transforms)}</ds:Transforms>
        <ds:DigestMethod Algorithm="{feature.digest}"/>
        <ds:DigestValue/>
      </ds:Reference>
      <ds:Reference URI="#props" Type="http://uri.etsi.org/01903#SignedProperties">
        <ds:Transforms>{transform(EXC_C14N)}</ds:Transforms>
        <ds:DigestMethod Algorithm="{SHA256}"/>
        <ds:DigestValue/>
      </ds:Reference>
    </ds:SignedInfo>
    <ds:SignatureValue/>
    <ds:KeyInfo><ds:X509Data/></ds:KeyInfo>
    <ds:Object>
      <xades:QualifyingProperties xmlns:xades="http://uri.etsi.org/01903/v1.3.2#" Target="#sig">
        <xades:SignedProperties Id="props">
          <xades:SignedSignatureProperties>
            <xades:SigningTime>{datetime.now(UTC).replace(microsecond=0).isoformat()}</xades:SigningTime>
            <xades:SigningCertificateV2>
              <xades:Cert><xades:CertDigest>
                <ds:DigestMethod Algorithm="{SHA256}"/>
                <ds:DigestValue>{cert_digest}</ds:DigestValue>
              </xades:CertDigest></xades:Cert>
            </xades:SigningCertificateV2>
          </xades:SignedSignatureProperties>
        </xades:SignedProperties>
      </xades:QualifyingProperties>
    </ds:Object>
  </ds:Signature>
</t:Doc>
""".encode()


def xmlsec1_sign(document: bytes, pki: SandboxPKI, directory: Path) -> bytes:
    signer = pki.signers["sandbox-rsa"]
    source = directory / "template.xml"
    source.write_bytes(document)
    signed = directory / "signed.xml"
    # The key, then its certificate, then the chain: xmlsec1 takes the first as the key's.
    keys = f"{signer.key_pem},{signer.cert_pem},{signer.chain_pem}"
    done = subprocess.run(
        ["xmlsec1", "--sign", "--privkey-pem", keys,
         "--id-attr:Id", "http://uri.etsi.org/01903/v1.3.2#:SignedProperties",
         "--id-attr:Id", "urn:sidecar:test:features:Data",
         "--id-attr:Id", "urn:sidecar:test:features:Payload",
         "--output", str(signed), str(source)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return signed.read_bytes()


def xmlsec1_checks(document: bytes, pki: SandboxPKI) -> None:
    done = subprocess.run(
        ["xmlsec1", "--verify", "--trusted-pem", str(pki.roots_pem),
         "--id-attr:Id", "http://uri.etsi.org/01903/v1.3.2#:SignedProperties",
         "--id-attr:Id", "urn:sidecar:test:features:Data",
         "--id-attr:Id", "urn:sidecar:test:features:Payload",
         "-"],
        input=document, capture_output=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")


async def ours(document: bytes, pki: SandboxPKI) -> SignatureReport:
    roots = [
        x509.Certificate.load(der) for _, _, der in pem.unarmor(pki.roots_pem.read_bytes(), True)
    ]
    (report,) = await verify_xml(document, VerificationPolicy(trust_roots=roots))
    return report


@pytest.fixture(scope="module")
def signed_features(
    sandbox_pki: SandboxPKI, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, bytes]:
    cert_der = pem.unarmor(sandbox_pki.signers["sandbox-rsa"].cert_pem.read_bytes())[2]
    made = {}
    for name, feature in FEATURES.items():
        document = xmlsec1_sign(
            template(feature, cert_der), sandbox_pki, tmp_path_factory.mktemp(name)
        )
        xmlsec1_checks(document, sandbox_pki)
        made[name] = document
    return made


@pytest.mark.parametrize(
    "name", ["base64", "xpath-filter2", "xpath-filter2-intersect", "xpointer-root", "xpointer-id"]
)
async def test_supported_feature_verifies(
    name: str, signed_features: dict[str, bytes], sandbox_pki: SandboxPKI
) -> None:
    report = await ours(signed_features[name], sandbox_pki)
    assert report.details["checks"].get("references") == "ok", report.messages
    assert report.details["checks"]["signature_value"] == "ok"
    assert report.level == Level.B_B
    # Core validity holds; only the signer's revocation status is unknown offline.
    assert (report.indication, report.sub_indication) == (
        Indication.INDETERMINATE,
        SubIndication.TRY_LATER,
    ), report.messages


@pytest.mark.parametrize("name", ["sha1-digest", "sha1-signature"])
async def test_sha1_is_indeterminate_not_failed(
    name: str, signed_features: dict[str, bytes], sandbox_pki: SandboxPKI
) -> None:
    report = await ours(signed_features[name], sandbox_pki)
    assert report.indication == Indication.INDETERMINATE
    assert report.sub_indication == SubIndication.CRYPTO_CONSTRAINTS_FAILURE_NO_POE
    assert "SHA-1" in report.messages[0]


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        ("base64", b"JVBERi0x", b"JVBERi1x"),
        ("xpath-filter2", b"42.00", b"43.00"),
        ("xpath-filter2-intersect", b"42.00", b"43.00"),
        ("xpointer-root", b"made by xmlsec1", b"made by someone"),
        ("xpointer-id", b"a comment inside", b"a comment changed"),
        ("sha1-digest", b"42.00", b"43.00"),
    ],
)
async def test_a_changed_byte_still_fails(
    name: str, old: bytes, new: bytes, signed_features: dict[str, bytes], sandbox_pki: SandboxPKI
) -> None:
    document = signed_features[name]
    assert document.count(old) == 1
    report = await ours(document.replace(old, new), sandbox_pki)
    assert (report.indication, report.sub_indication) == (
        Indication.TOTAL_FAILED,
        SubIndication.HASH_FAILURE,
    ), report.messages


async def test_what_a_filter_subtracts_is_not_covered(
    signed_features: dict[str, bytes], sandbox_pki: SandboxPKI
) -> None:
    """The intersect/subtract filter leaves t:Secret out: changing it changes nothing,
    as xmlsec1 agrees."""
    changed = signed_features["xpath-filter2-intersect"].replace(b"hidden", b"public")
    xmlsec1_checks(changed, sandbox_pki)
    report = await ours(changed, sandbox_pki)
    assert report.details["checks"]["references"] == "ok", report.messages
