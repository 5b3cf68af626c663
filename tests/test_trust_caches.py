"""The trust layer's validation caches: what is reused, for how long, and what is not.

- Validated chains (``RevocationService.revocation_info``): a burst validates each
  chain once and asks the responder once per certificate; a result past the refresh
  point of its OCSP data is validated again; a certificate revoked after a
  validation is caught once its status is refreshed.
- Validated TSA paths (``TsaPathCache``): one path validation per TSA certificate,
  while every token still gets its own CMS signature, nonce and imprint checks.

Requests are counted at the responder itself (``counted_pki``), and validations by
wrapping pyhanko-certvalidator's own entry point (the real code runs; it is counted).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
import pytest_asyncio
from asn1crypto import cms, x509
from certomancer.registry import CertLabel
from certomancer.registry.issued.general import RevocationStatus
from pyhanko_certvalidator import CertificateValidator

from sidecar.keys import KeyConfig, create_signer
from sidecar.sandbox import SandboxPKI
from sidecar.signing.report import Level
from sidecar.signing.trust_binding import TrustTimestampSource, TrustValidationDataSource
from sidecar.signing.xades import sign_xml
from sidecar.trust import (
    CertificateRevoked,
    RevocationCache,
    RevocationService,
    TimeStampClient,
    TrustAnchors,
    TsaEndpoint,
    TsaReplyError,
    load_certificates,
)
from sidecar.trust.tsa import ReceivedContentInfo, TsaPathCache
from tests.fixtures.trust import CountedPKI, TamperingProxy

FORM = b'<?xml version="1.0" encoding="UTF-8"?>\n<Form xmlns="urn:test"><A>1</A></Form>\n'


class Clock:
    """A settable UTC clock for the revocation cache."""

    def __init__(self) -> None:
        self.skew = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.skew


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts chain validations: pyhanko-certvalidator's entry point, wrapped (it still runs)."""
    calls: list[int] = []
    real = CertificateValidator.async_validate_path

    async def counted(self: CertificateValidator):  # type: ignore[no-untyped-def]
        calls.append(1)
        return await real(self)

    monkeypatch.setattr(CertificateValidator, "async_validate_path", counted)
    yield calls


@pytest_asyncio.fixture
async def trust(
    counted_pki: CountedPKI,
) -> AsyncIterator[Callable[..., Awaitable[tuple[RevocationService, TimeStampClient]]]]:
    """``make(now=...)``: a revocation service and TSA client on the counted PKI."""
    counted_pki.counter.reset()
    anchors = TrustAnchors.load([counted_pki.pki.roots_pem])
    opened: list[RevocationCache] = []
    async with aiohttp.ClientSession() as session:

        async def make(
            now: Callable[[], datetime] | None = None,
        ) -> tuple[RevocationService, TimeStampClient]:
            cache = RevocationCache(None, **({"now": now} if now else {}))  # type: ignore[arg-type]
            await cache.open()
            opened.append(cache)
            service = RevocationService(session, anchors, cache, timeout=5)
            client = TimeStampClient(session, [TsaEndpoint(counted_pki.pki.tsa_url)], anchors)
            return service, client

        yield make
        for cache in opened:
            await cache.close()
    counted_pki.counter.reset()


def chain_of(pki: SandboxPKI, signer: str = "sandbox-rsa") -> list[x509.Certificate]:
    entry = pki.signers[signer]
    return [*load_certificates(entry.cert_pem), *load_certificates(entry.chain_pem)]


# ---------------------------------------------------------------- validated chains


async def test_burst_of_50_b_lt_signatures_validates_each_chain_once(
    trust: Callable[..., Awaitable[tuple[RevocationService, TimeStampClient]]],
    counted_pki: CountedPKI,
    validations: list[int],
) -> None:
    service, client = await trust()
    files = counted_pki.pki.signers["sandbox-rsa"]
    signer = create_signer(
        KeyConfig(
            id="burst",
            backend="pkcs12",
            path=files.p12,
            passphrase_source="config",
            passphrase=files.p12_passphrase,
        )
    )
    signer.open()
    try:
        timestamps = TrustTimestampSource(client)
        sources = TrustValidationDataSource(service)
        signed = await asyncio.gather(
            *(
                sign_xml(FORM, signer, Level.B_LT, timestamps=timestamps, validation_data=sources)
                for _ in range(50)
            )
        )
    finally:
        signer.close()
    assert len(signed) == 50 and all(b"RevocationValues" in s for s in signed)
    counts = counted_pki.counter.counts
    assert counts["tsa"] == 50  # every signature has its own token...
    # ...but one OCSP request per certificate: the signer, the TSA, the issuing CA.
    assert counts["ocsp"] == 3
    # One validation per chain (the signer's, the TSA's), counted at pyhanko-certvalidator.
    assert len(validations) == 2
    assert service.validation_stats.validations == 2
    stats = service.validation_stats
    assert stats.reused + stats.joined == 98  # kept result, or the validation under way
    # One TSA path validation; the 49 other tokens had their own signature checks only.
    assert (client.paths.stats.validations, client.paths.stats.reused) == (1, 49)


async def test_a_concurrent_burst_shares_one_validation(
    trust: Callable[..., Awaitable[tuple[RevocationService, TimeStampClient]]],
    counted_pki: CountedPKI,
    validations: list[int],
) -> None:
    service, _ = await trust()
    chain = chain_of(counted_pki.pki)
    results = await asyncio.gather(*(service.revocation_info(chain) for _ in range(50)))
    assert len(validations) == 1
    assert counted_pki.counter.counts["ocsp"] == 2
    assert all(r is results[0] for r in results)  # the one result, shared
    assert len(results[0].ocsp_responses) == 2


async def test_a_result_past_its_refresh_point_is_validated_again(
    trust: Callable[..., Awaitable[tuple[RevocationService, TimeStampClient]]],
    counted_pki: CountedPKI,
    validations: list[int],
) -> None:
    clock = Clock()
    service, _ = await trust(now=clock)
    chain = chain_of(counted_pki.pki)
    first = await service.revocation_info(chain)
    # certomancer's OCSP responses live 10 minutes; the cache refreshes 1 minute early.
    clock.skew = timedelta(minutes=8)
    assert await service.revocation_info(chain) is first
    assert len(validations) == 1
    clock.skew = timedelta(minutes=9, seconds=30)
    second = await service.revocation_info(chain)
    assert second is not first
    assert len(validations) == 2
    assert counted_pki.counter.counts["ocsp"] == 4  # both statuses asked again
    assert set(second.ocsp_responses).isdisjoint(first.ocsp_responses)  # fresh data embedded


async def test_a_certificate_revoked_after_validation_is_caught_once_refreshed(
    trust: Callable[..., Awaitable[tuple[RevocationService, TimeStampClient]]],
    counted_pki: CountedPKI,
) -> None:
    assert counted_pki.arch is not None
    clock = Clock()
    service, _ = await trust(now=clock)
    chain = chain_of(counted_pki.pki)
    await service.revocation_info(chain)
    spec = counted_pki.arch.get_cert_spec(CertLabel("signer-rsa"))
    revoked = RevocationStatus(revoked_since=datetime.now(UTC) - timedelta(minutes=1))
    # The responder now says "revoked" (certomancer reads the spec per request).
    object.__setattr__(spec, "revocation", revoked)
    try:
        # Within the validity of the "good" response held: reused, as documented.
        await service.revocation_info(chain)
        assert counted_pki.counter.counts["ocsp"] == 2
        clock.skew = timedelta(minutes=9, seconds=30)  # past its refresh point
        with pytest.raises(CertificateRevoked, match="Dr Alice Sandbox"):
            await service.revocation_info(chain)
        # A failure is never kept: asked again, it is validated (and refused) again.
        with pytest.raises(CertificateRevoked):
            await service.revocation_info(chain)
    finally:
        object.__setattr__(spec, "revocation", None)


async def test_other_anchors_or_forgetting_means_validating_again(
    trust: Callable[..., Awaitable[tuple[RevocationService, TimeStampClient]]],
    counted_pki: CountedPKI,
    validations: list[int],
) -> None:
    service, _ = await trust()
    chain = chain_of(counted_pki.pki)
    await service.revocation_info(chain)
    service.anchors = TrustAnchors.load([counted_pki.pki.roots_pem])  # a reload
    await service.revocation_info(chain)
    assert len(validations) == 2
    service.forget_validated()
    await service.revocation_info(chain)
    assert len(validations) == 3
    assert counted_pki.counter.counts["ocsp"] == 2  # the data itself stayed cached


# ---------------------------------------------------------------- TSA paths


async def test_tsa_path_validated_once_yet_every_token_checked(
    counted_pki: CountedPKI,
    tampering_proxy: Callable[[str], Awaitable[TamperingProxy]],
) -> None:
    proxy = await tampering_proxy(counted_pki.pki.tsa_url)
    async with aiohttp.ClientSession() as session:
        client = TimeStampClient(
            session,
            [TsaEndpoint(proxy.url, attempts=1)],
            TrustAnchors.load([counted_pki.pki.roots_pem]),
        )
        digest = hashlib.sha256(b"signature value").digest()
        for _ in range(3):
            token = await client.timestamp(digest)
            assert token.imprint == digest
            assert [c.sha256 for c in token.chain] == [
                c.sha256 for c in client.paths._paths[token.signer.sha256].chain
            ]
        assert (client.paths.stats.validations, client.paths.stats.reused) == (1, 2)
        # With the path kept, a tampered token is still refused, by its own checks.
        for mode, reason in (
            ("signature", "bad_signature"),
            ("nonce", "nonce_mismatch"),
            ("imprint", "imprint_mismatch"),
        ):
            proxy.mode = mode
            with pytest.raises(TsaReplyError) as caught:
                await client.timestamp(digest)
            assert caught.value.reason == reason, mode
        assert client.paths.stats.reused == 3  # the signature case took the kept path
        assert client.paths.stats.validations == 1


async def test_tsa_path_expires_and_follows_the_anchors(
    counted_pki: CountedPKI, sandbox_pki: SandboxPKI
) -> None:
    ticks = {"now": 0.0}
    async with aiohttp.ClientSession() as session:
        anchors = TrustAnchors.load([counted_pki.pki.roots_pem])
        client = TimeStampClient(session, [TsaEndpoint(counted_pki.pki.tsa_url)], anchors)
        client.paths = TsaPathCache(ttl=3600, clock=lambda: ticks["now"])
        digest = hashlib.sha256(b"x").digest()
        await client.timestamp(digest)
        await client.timestamp(digest)
        assert client.paths.stats.validations == 1
        ticks["now"] = 3601.0
        await client.timestamp(digest)
        assert client.paths.stats.validations == 2
        # A kept path is tied to the anchor set it was validated against.
        token = await client.timestamp(digest)
        other = TrustAnchors.load([sandbox_pki.roots_pem])
        assert client.paths.lookup(token.signer, anchors, token.gen_time) is not None
        assert client.paths.lookup(token.signer, other, token.gen_time) is None


def test_tsa_path_is_used_only_inside_the_validity_of_every_certificate(
    counted_pki: CountedPKI,
) -> None:
    chain = chain_of(counted_pki.pki)  # any chain will do for the bookkeeping
    anchors = TrustAnchors.load([counted_pki.pki.roots_pem])
    paths = TsaPathCache()
    paths.remember(chain, anchors)
    end = min(c.not_valid_after for c in chain)
    start = max(c.not_valid_before for c in chain)
    assert paths.lookup(chain[0], anchors, start + timedelta(days=1)) is not None
    assert paths.lookup(chain[0], anchors, end + timedelta(seconds=1)) is None
    assert paths.lookup(chain[0], anchors, start - timedelta(seconds=1)) is None
    assert paths.lookup(chain[1], anchors, start + timedelta(days=1)) is None


def test_received_token_is_written_as_received() -> None:
    """A token keeps the TSA's bytes, whatever asn1crypto would make of them."""
    oid = bytes.fromhex("06092a864886f70d010701")  # id-data
    # DER whose length is 0x80, which asn1crypto takes for "indefinite": it re-encodes.
    der = cms.ContentInfo({"content_type": "data", "content": b"\x00" * 113}).dump()
    assert der[:3] == b"\x30\x81\x80"
    assert ReceivedContentInfo.received(der).dump() == der
    # BER (an OCTET STRING length in long form): re-encoding would change signed bytes.
    inner = b"\x04\x81\x71" + b"\x00" * 113
    body = oid + b"\xa0" + bytes([len(inner)]) + inner
    ber = b"\x30\x81" + bytes([len(body)]) + body
    value = ReceivedContentInfo.received(ber)
    assert value["content"].native == b"\x00" * 113
    assert value.dump() == ber
    assert value.dump(force=True) == ber
    assert cms.ContentInfo.load(ber).dump(force=True) != ber  # what a plain one does
