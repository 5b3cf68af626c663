"""The per-token check of a TSA reply once the TSA's path is known good, branch by branch.

Each case takes a real token from the sandbox TSA, changes its signed attributes and
signs them again with the TSA's own key, so that only the changed attribute is wrong.
pyHanko's ``validate_sig_integrity`` judges the same tokens, independently.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable

import aiohttp
import pytest
from asn1crypto import cms, pem, tsp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from pyhanko.sign.general import as_signing_certificate, simple_cms_attribute
from pyhanko.sign.validation.errors import SignatureValidationError
from pyhanko.sign.validation.generic_cms import validate_sig_integrity

from sidecar.sandbox import SandboxPKI
from sidecar.trust import TimeStampClient, TrustAnchors, TsaEndpoint
from sidecar.trust.tsa import TimeStampToken, TsaReplyError, _check_token_signature

Edit = Callable[[list[cms.CMSAttribute], TimeStampToken], list[cms.CMSAttribute]]


def _replace(name: str, value: object) -> Edit:
    def edit(attrs: list[cms.CMSAttribute], token: TimeStampToken) -> list[cms.CMSAttribute]:
        return [simple_cms_attribute(name, value) if a["type"].native == name else a for a in attrs]

    return edit


def _other_certificate(attrs: list[cms.CMSAttribute], token: TimeStampToken) -> list:
    other = token.chain[1]  # the TSA's issuer: a real certificate, not the TSA's
    return [
        simple_cms_attribute("signing_certificate", as_signing_certificate(other))
        if a["type"].native.startswith("signing_certificate")
        else a
        for a in attrs
    ]


def _twice(name: str) -> Edit:
    def edit(attrs: list[cms.CMSAttribute], token: TimeStampToken) -> list[cms.CMSAttribute]:
        (attr,) = [a for a in attrs if a["type"].native == name]
        return [*attrs, copy.deepcopy(attr)]

    return edit


def _without(name: str) -> Edit:
    def edit(attrs: list[cms.CMSAttribute], token: TimeStampToken) -> list[cms.CMSAttribute]:
        return [a for a in attrs if a["type"].native != name]

    return edit


def _protection(digest: str) -> Edit:
    def edit(attrs: list[cms.CMSAttribute], token: TimeStampToken) -> list[cms.CMSAttribute]:
        value = cms.CMSAlgorithmProtection(
            {
                "digest_algorithm": {"algorithm": digest},
                "signature_algorithm": {"algorithm": "sha256_rsa"},
            }
        )
        return [*attrs, simple_cms_attribute("cms_algorithm_protection", value)]

    return edit


@pytest.fixture
async def token(sandbox_services: SandboxPKI) -> TimeStampToken:
    async with aiohttp.ClientSession() as session:
        client = TimeStampClient(
            session,
            [TsaEndpoint(sandbox_services.tsa_url)],
            TrustAnchors.load([sandbox_services.roots_pem]),
        )
        return await client.timestamp(hashlib.sha256(b"signature value").digest())


def _resigned(token: TimeStampToken, pki: SandboxPKI, edit: Edit | None) -> cms.SignedData:
    """The token's SignedData with its signed attributes edited and signed again."""
    info = cms.ContentInfo.load(token.der)
    signed_data = info["content"]
    signer_info = signed_data["signer_infos"][0]
    attrs = list(signer_info["signed_attrs"])
    if edit is not None:
        attrs = edit(attrs, token)
    signed_attrs = cms.CMSAttributes(attrs)
    key = serialization.load_der_private_key(
        pem.unarmor((pki.directory / "keys" / "tsa.key.pem").read_bytes())[2], password=None
    )
    signer_info["signed_attrs"] = signed_attrs
    signer_info["signature_algorithm"] = {"algorithm": "sha256_rsa"}
    signer_info["signature"] = key.sign(  # type: ignore[union-attr]
        signed_attrs.dump(), PKCS1v15(), hashes.SHA256()
    )
    reloaded: cms.SignedData = cms.ContentInfo.load(info.dump(force=True))["content"]
    return reloaded


def _ours(signed_data: cms.SignedData, token: TimeStampToken) -> str | None:
    def fail(reason: str, message: str) -> TsaReplyError:
        return TsaReplyError(message, reason=reason)

    try:
        _check_token_signature(signed_data, token.signer, token.gen_time, fail)
    except TsaReplyError as exc:
        return str(exc)
    return None


def _pyhanko_accepts(signed_data: cms.SignedData, token: TimeStampToken) -> bool:
    content = bytes(signed_data["encap_content_info"]["content"])
    try:
        intact, valid = validate_sig_integrity(
            signed_data["signer_infos"][0],
            token.signer,
            expected_content_type="tst_info",
            actual_digest=hashlib.sha256(content).digest(),
        )
    except SignatureValidationError:
        return False
    return intact and valid


async def test_a_token_signed_again_unchanged_is_accepted(
    token: TimeStampToken, sandbox_services: SandboxPKI
) -> None:
    signed_data = _resigned(token, sandbox_services, None)
    assert _ours(signed_data, token) is None
    assert _pyhanko_accepts(signed_data, token)


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (_replace("content_type", "data"), "content type"),
        (_replace("message_digest", bytes(32)), "does not verify"),
        (_other_certificate, "ESS signing certificate"),
        (_twice("message_digest"), "single-valued"),
        (_without("message_digest"), "lack message_digest"),
        (_without("content_type"), "lack content_type"),
        (_protection("sha512"), "CMSAlgorithmProtection"),
    ],
    ids=[
        "content-type",
        "message-digest",
        "ess-names-another-certificate",
        "digest-twice",
        "no-digest",
        "no-content-type",
        "algorithm-protection",
    ],
)
async def test_each_wrong_signed_attribute_is_refused(
    edit: Edit, says: str, token: TimeStampToken, sandbox_services: SandboxPKI
) -> None:
    signed_data = _resigned(token, sandbox_services, edit)
    refusal = _ours(signed_data, token)
    assert refusal is not None and says in refusal, refusal
    assert not _pyhanko_accepts(signed_data, token)


async def test_the_ess_answer_is_per_certificate(
    token: TimeStampToken, sandbox_services: SandboxPKI
) -> None:
    """The remembered ESS match is keyed by the certificate too: the same attribute
    checked against another certificate is matched again, and refused."""
    signed_data = _resigned(token, sandbox_services, None)
    assert _ours(signed_data, token) is None
    impostor = TimeStampToken(
        content_info=token.content_info,
        tst_info=token.tst_info,
        tsa_url=token.tsa_url,
        chain=(token.chain[1], *token.chain[1:]),
    )
    refusal = _ours(signed_data, impostor)
    assert refusal is not None
    assert tsp.TSTInfo.load(bytes(signed_data["encap_content_info"]["content"]))


def _signature_flipped(signed_data: cms.SignedData) -> cms.SignedData:
    """A copy of *signed_data* with the signature's last bit flipped."""
    signed_data = signed_data.copy()
    signer_info = signed_data["signer_infos"][0]
    value = bytearray(signer_info["signature"].native)
    value[-1] ^= 0x01
    signer_info["signature"] = bytes(value)
    info = cms.ContentInfo({"content_type": "signed_data", "content": signed_data})
    reloaded: cms.SignedData = cms.ContentInfo.load(info.dump(force=True))["content"]
    return reloaded


@pytest.mark.parametrize("algorithm", ["sha256_rsa", "rsassa_pkcs1v15"])
async def test_the_signature_itself_is_verified(
    algorithm: str, token: TimeStampToken, sandbox_services: SandboxPKI
) -> None:
    """The RSA signature (verified with cryptography directly, the key loaded once per
    certificate) is judged as pyHanko judges it, whether the algorithm names its hash
    or leaves it to the SignerInfo's digest algorithm."""
    signed_data = _resigned(token, sandbox_services, None)
    signed_data["signer_infos"][0]["signature_algorithm"] = {"algorithm": algorithm}
    good = cms.ContentInfo.load(
        cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump(force=True)
    )["content"]
    assert _ours(good, token) is None
    assert _pyhanko_accepts(good, token)
    for _ in range(2):  # the second time with the key and the algorithms' verdict kept
        refusal = _ours(_signature_flipped(good), token)
        assert refusal is not None and "does not verify" in refusal, refusal
    assert not _pyhanko_accepts(_signature_flipped(good), token)
    assert _ours(good, token) is None


async def test_a_weak_digest_is_refused_every_time(
    token: TimeStampToken, sandbox_services: SandboxPKI
) -> None:
    """The algorithm policy's remembered verdict is per algorithm: SHA-1 is refused on
    every token, while SHA-256 from the same certificate stays accepted."""
    signed_data = _resigned(token, sandbox_services, None)
    signer_info = signed_data["signer_infos"][0]
    signer_info["digest_algorithm"] = {"algorithm": "sha1"}
    signer_info["signature_algorithm"] = {"algorithm": "sha1_rsa"}
    weak = cms.ContentInfo.load(
        cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump(force=True)
    )["content"]
    for _ in range(2):
        refusal = _ours(weak, token)
        assert refusal is not None and "refused" in refusal, refusal
    assert _ours(_resigned(token, sandbox_services, None), token) is None


async def test_tokens_of_one_tsa_share_their_parsed_certificates(
    sandbox_services: SandboxPKI,
) -> None:
    """A TSA's certificate is parsed once, not per token: two tokens carry the very
    same certificate objects, which the XAdES engine then embeds and hashes."""
    async with aiohttp.ClientSession() as session:
        client = TimeStampClient(
            session,
            [TsaEndpoint(sandbox_services.tsa_url)],
            TrustAnchors.load([sandbox_services.roots_pem]),
        )
        first = await client.timestamp(hashlib.sha256(b"one").digest())
        second = await client.timestamp(hashlib.sha256(b"two").digest())
    assert first.certificates and first.der != second.der
    assert all(a is b for a, b in zip(first.certificates, second.certificates, strict=True))
    fresh = [c.chosen for c in cms.ContentInfo.load(second.der)["content"]["certificates"]]
    assert [c.dump() for c in second.certificates] == [c.dump() for c in fresh]
