"""Kept certificate-validation outcomes (#19): reused only for the same inputs in the
same validation-time window, never where the verdict could differ.

The documents here carry OCSP responses issued by the sandbox PKI's own responders
(certomancer, in process) five minutes before their signature timestamp, as a daemon
reusing its revocation cache would embed them: the timestamp's time is then outside
every zone around the instants the inputs carry, so outcomes are kept.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime, timedelta

import pytest
from asn1crypto import ocsp
from certomancer.registry import CertLabel, ServiceLabel
from certomancer.registry.issued.general import RevocationStatus
from certomancer.registry.pki_arch import PKIArchitecture
from lxml import etree

from sidecar.sandbox import SandboxPKI
from sidecar.sandbox.pki import load_certomancer_config
from sidecar.signing import xades_verify
from sidecar.signing.report import Indication, Level, SubIndication
from sidecar.signing.validation_cache import OutcomeCache, instants
from sidecar.signing.xades_verify import VerificationPolicy, verify_xml
from sidecar.signing.xmldsig import ds, xades
from sidecar.trust import TrustServices, load_certificates
from tests.fixtures.sandbox import MakeSandboxPKI
from tests.fixtures.xades import SignXml


def _gen_time(document: bytes) -> datetime:
    from sidecar.trust.tsa import read_token

    root = etree.fromstring(document)
    token = next(root.iter(xades("EncapsulatedTimeStamp")))
    return read_token(base64.b64decode(token.text or "")).gen_time


def _reissued(
    document: bytes, arch: PKIArchitecture, at: datetime, *, revoked: str | None = None
) -> bytes:
    """``document`` with each embedded OCSP response issued again at ``at`` by the same
    responder, for the same certificate (``revoked``: that certificate label's revoked
    an hour before ``at``)."""
    spec = None if revoked is None else arch.get_cert_spec(CertLabel(revoked))
    if spec is not None:
        object.__setattr__(
            spec, "revocation", RevocationStatus(revoked_since=at - timedelta(hours=1))
        )
    try:
        root = etree.fromstring(document)
        # Replaced in the bytes: serializing the tree again would change signed data.
        for element in root.iter(xades("EncapsulatedOCSPValue")):
            old = ocsp.OCSPResponse.load(base64.b64decode(element.text or ""))
            data = old["response_bytes"]["response"].parsed["tbs_response_data"]
            request = ocsp.OCSPRequest(
                {"tbs_request": {"request_list": [{"req_cert": data["responses"][0]["cert_id"]}]}}
            )
            for ca in ("root", "intermediate"):
                responder = arch.service_registry.summon_responder(ServiceLabel(ca), at_time=at)
                if responder.responder_cert.public_key.sha1 != data["responder_id"].chosen.native:
                    continue
                new = responder.build_ocsp_response(request)
                text = (element.text or "").encode("ascii")
                document = document.replace(text, base64.b64encode(new.dump()), 1)
                break
            else:
                raise AssertionError("no responder for an embedded OCSP response")
        return document
    finally:
        if spec is not None:
            object.__setattr__(spec, "revocation", None)


@pytest.fixture(scope="module")
def arch(sandbox_pki: SandboxPKI) -> PKIArchitecture:
    return load_certomancer_config(sandbox_pki)


@pytest.fixture
def policy(xades_trust: TrustServices) -> VerificationPolicy:
    return VerificationPolicy(trust_roots=xades_trust.anchors.certificates)


async def _kept_document(signed_xml: SignXml, arch: PKIArchitecture) -> bytes:
    signed = await signed_xml("pkcs12-rsa", Level.B_LT)
    return await asyncio.to_thread(
        _reissued, signed, arch, _gen_time(signed) - timedelta(minutes=5)
    )


async def test_a_pass_is_kept_and_reused_for_the_same_document(
    signed_xml: SignXml, arch: PKIArchitecture, policy: VerificationPolicy
) -> None:
    document = await _kept_document(signed_xml, arch)
    (first,) = await verify_xml(document, policy)
    hits = xades_verify._OUTCOMES.hits
    (second,) = await verify_xml(document, policy)
    assert first.indication == second.indication == Indication.TOTAL_PASSED, first
    assert first.level == second.level == Level.B_LT
    assert first.as_json() == second.as_json()
    assert xades_verify._OUTCOMES.hits == hits + 2  # the signer's and the TSA's


async def test_revoked_data_is_not_answered_by_a_kept_pass(
    signed_xml: SignXml, arch: PKIArchitecture, policy: VerificationPolicy
) -> None:
    document = await _kept_document(signed_xml, arch)
    (good,) = await verify_xml(document, policy)
    assert good.indication == Indication.TOTAL_PASSED
    signed = await signed_xml("pkcs12-rsa", Level.B_LT)
    revoked = await asyncio.to_thread(
        _reissued, signed, arch, _gen_time(signed) - timedelta(minutes=5), revoked="signer-rsa"
    )
    (report,) = await verify_xml(revoked, policy)
    assert report.indication == Indication.TOTAL_FAILED, report
    assert report.sub_indication == SubIndication.REVOKED


async def test_other_anchors_are_not_answered_by_a_kept_pass(
    signed_xml: SignXml,
    arch: PKIArchitecture,
    policy: VerificationPolicy,
    make_sandbox_pki: MakeSandboxPKI,
) -> None:
    document = await _kept_document(signed_xml, arch)
    assert (await verify_xml(document, policy))[0].indication == Indication.TOTAL_PASSED
    other = VerificationPolicy(trust_roots=load_certificates(make_sandbox_pki().roots_pem))
    (report,) = await verify_xml(document, other)
    assert report.indication == Indication.INDETERMINATE
    assert report.sub_indication == SubIndication.NO_CERTIFICATE_CHAIN_FOUND


async def test_a_damaged_token_fails_though_its_tsa_path_is_kept(
    signed_xml: SignXml, arch: PKIArchitecture, policy: VerificationPolicy
) -> None:
    document = await _kept_document(signed_xml, arch)
    assert (await verify_xml(document, policy))[0].indication == Indication.TOTAL_PASSED
    at = document.index(b"<xades:EncapsulatedTimeStamp")
    at = document.index(b">", at) + 600
    damaged = document[:at] + (b"A" if document[at : at + 1] != b"A" else b"B") + document[at + 1 :]
    (report,) = await verify_xml(damaged, policy)
    assert report.indication == Indication.TOTAL_FAILED, report


async def test_a_kept_pass_is_not_reused_outside_its_time_window(
    signed_xml: SignXml, arch: PKIArchitecture, policy: VerificationPolicy
) -> None:
    document = await _kept_document(signed_xml, arch)
    signature = etree.fromstring(document).find(f".//{ds('Signature')}")
    assert signature is not None
    embedded = xades_verify._embedded(signature)
    signer = next(c for c in embedded.certificates if "Alice" in c.subject.human_friendly)
    moment = _gen_time(document)
    assert await xades_verify._validate_signer(signer, policy, embedded, moment) is None
    hits = xades_verify._OUTCOMES.hits
    # A second later: the same window, reused.
    later = moment + timedelta(seconds=1)
    assert await xades_verify._validate_signer(signer, policy, embedded, later) is None
    assert xades_verify._OUTCOMES.hits == hits + 1
    # Past the OCSP responses' freshness (no nextUpdate: thisUpdate + 30 minutes).
    stale = moment + timedelta(minutes=40)
    assert await xades_verify._validate_signer(signer, policy, embedded, stale) is not None
    # After the signer's certificate expired.
    expired = signer.not_valid_after + timedelta(days=1)
    assert await xades_verify._validate_signer(signer, policy, embedded, expired) is not None
    # With no revocation data at all.
    embedded.ocsps = []
    assert (
        await xades_verify._validate_signer(signer, policy, embedded, moment)
        == SubIndication.TRY_LATER
    )


def test_no_window_next_to_an_instant_of_the_inputs(
    sandbox_pki: SandboxPKI,
) -> None:
    (root,) = load_certificates(sandbox_pki.roots_pem)
    assert instants(root.dump()) == (root.not_valid_before, root.not_valid_after)
    cache = OutcomeCache(2, tolerance=timedelta(seconds=30))

    def key(at: datetime) -> object:
        return cache.key("t", root, [root], [], [], [], at)

    start = root.not_valid_before
    assert key(start + timedelta(seconds=30)) is None  # within the tolerance and a second
    assert key(start + timedelta(seconds=31, microseconds=1)) is not None
    assert key(start + timedelta(days=1)) == key(start + timedelta(days=2))
    # 30 minutes on (the fallback freshness of revocation data without nextUpdate).
    assert key(start + timedelta(minutes=30)) is None
    assert key(start + timedelta(minutes=29)) != key(start + timedelta(minutes=31))
    assert key(root.not_valid_after) is None
    for index in range(3):
        cache.put(index, index)
    assert len(cache) == 2  # bounded, the oldest forgotten
