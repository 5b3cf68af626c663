"""Revocation data: OCSP first, CRL fallback, one request per certificate for a burst,
and a disk cache that outlives a restart and an OCSP blip.

Requests are counted at the responder itself (``counted_pki``: certomancer's animator
behind a counting middleware), never inferred from our own bookkeeping.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from asn1crypto import crl, ocsp, x509
from pyhanko_certvalidator import CertificateValidator

from sidecar.trust import (
    RevocationCache,
    RevocationError,
    RevocationService,
    RevocationUnavailable,
    TrustAnchors,
    load_certificates,
)
from tests.fixtures.trust import CountedPKI

MakeService = Callable[..., Awaitable[RevocationService]]


def chain_of(pki: CountedPKI, signer: str = "sandbox-rsa") -> list[x509.Certificate]:
    entry = pki.pki.signers[signer]
    return [*load_certificates(entry.cert_pem), *load_certificates(entry.chain_pem)]


@pytest_asyncio.fixture
async def make_service(counted_pki: CountedPKI, tmp_path: Path) -> AsyncIterator[MakeService]:
    """``make_service(database=..., now=...)``: a service on its own session (a "process")."""
    counted_pki.counter.reset()
    opened: list[tuple[aiohttp.ClientSession, RevocationCache]] = []
    anchors = TrustAnchors.load([counted_pki.pki.roots_pem])

    async def make(
        database: Path | None = tmp_path / "revocation.sqlite3",
        now: Callable[[], datetime] | None = None,
        on_exchange: Callable[[str, str, float], None] | None = None,
    ) -> RevocationService:
        session = aiohttp.ClientSession()
        kwargs = {"now": now} if now is not None else {}
        cache = RevocationCache(database, **kwargs)  # type: ignore[arg-type]
        await cache.open()
        opened.append((session, cache))
        return RevocationService(session, anchors, cache, timeout=5, on_exchange=on_exchange)

    yield make
    for session, cache in opened:
        await cache.close()
        await session.close()
    counted_pki.counter.reset()


async def test_burst_of_100_makes_one_ocsp_request_per_certificate(
    make_service: MakeService, counted_pki: CountedPKI
) -> None:
    exchanges: list[tuple[str, str]] = []
    service = await make_service(
        on_exchange=lambda up, outcome, _s: exchanges.append((up, outcome))
    )
    chain = chain_of(counted_pki)
    results = await asyncio.gather(*(service.revocation_info(chain) for _ in range(100)))
    # signer (intermediate's responder) + intermediate (root's responder); the root is
    # the anchor and needs none.
    assert counted_pki.counter.counts["ocsp"] == 2
    assert counted_pki.counter.counts["crl"] == 0
    assert exchanges == [("ocsp", "ok"), ("ocsp", "ok")]  # what /metrics is told
    for values in results:
        assert len(values.ocsp_responses) == 2
        assert values.crls == ()
        statuses = {
            ocsp.OCSPResponse.load(der)
            .basic_ocsp_response["tbs_response_data"]["responses"][0]["cert_status"]
            .name
            for der in values.ocsp_responses
        }
        assert statuses == {"good"}
    # The chain and both OCSP responders' certificates, for CertificateValues.
    subjects = {
        x509.Certificate.load(der).subject.native["common_name"] for der in results[0].certificates
    }
    assert any("Root CA" in s for s in subjects)
    assert any("Issuing CA" in s for s in subjects)
    assert any("OCSP" in s for s in subjects)
    assert "Dr Alice Sandbox" in subjects

    # Another burst later: served from the cache, still two requests in all.
    await asyncio.gather(*(service.revocation_info(chain) for _ in range(100)))
    assert counted_pki.counter.counts["ocsp"] == 2
    assert service.cache.stats.fetches == 2


async def test_second_signer_of_the_same_ca_costs_one_more_request(
    make_service: MakeService, counted_pki: CountedPKI
) -> None:
    service = await make_service()
    await service.revocation_info(chain_of(counted_pki, "sandbox-rsa"))
    await service.revocation_info(chain_of(counted_pki, "sandbox-ec"))
    assert counted_pki.counter.counts["ocsp"] == 3  # the intermediate's status is shared


async def test_restart_during_an_ocsp_outage_uses_the_disk_cache(
    make_service: MakeService, counted_pki: CountedPKI, tmp_path: Path
) -> None:
    first = await make_service()
    await first.revocation_info(chain_of(counted_pki))
    assert counted_pki.counter.counts["ocsp"] == 2
    db = sqlite3.connect(tmp_path / "revocation.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT count(*) FROM revinfo WHERE kind = 'ocsp'").fetchone()[0] == 2
    db.close()

    counted_pki.counter.down |= {"ocsp", "crl"}
    restarted = await make_service()  # a new session and memory: only the file is shared
    values = await restarted.revocation_info(chain_of(counted_pki))
    assert len(values.ocsp_responses) == 2
    assert counted_pki.counter.counts["ocsp"] == 2  # nothing asked of the dead responder


async def test_blip_after_refresh_point_serves_the_still_valid_response(
    make_service: MakeService, counted_pki: CountedPKI
) -> None:
    clock = {"skew": timedelta(0)}
    service = await make_service(database=None, now=lambda: datetime.now(UTC) + clock["skew"])
    await service.revocation_info(chain_of(counted_pki))
    # certomancer's responses live 10 minutes; the cache refreshes one minute early.
    clock["skew"] = timedelta(minutes=9, seconds=30)
    counted_pki.counter.down.add("ocsp")
    values = await service.revocation_info(chain_of(counted_pki))
    assert counted_pki.counter.counts["ocsp"] == 4  # refresh tried for both, both refused
    assert service.cache.stats.stale_served == 2
    assert len(values.ocsp_responses) == 2
    assert counted_pki.counter.counts["crl"] == 0


async def test_ocsp_down_falls_back_to_crls(
    make_service: MakeService, counted_pki: CountedPKI
) -> None:
    counted_pki.counter.down.add("ocsp")
    service = await make_service(database=None)
    results = await asyncio.gather(
        *(service.revocation_info(chain_of(counted_pki)) for _ in range(20))
    )
    values = results[0]
    assert values.ocsp_responses == ()
    issuers = {
        crl.CertificateList.load(der)["tbs_cert_list"]["issuer"].native["common_name"]
        for der in values.crls
    }
    assert any("Issuing CA" in i for i in issuers) and any("Root CA" in i for i in issuers)
    # One CRL download per CA for the whole burst, and OCSP tried once per certificate.
    assert counted_pki.counter.counts["crl"] == 2
    assert counted_pki.counter.counts["ocsp"] == 2


async def test_everything_down_and_nothing_cached_is_unavailable(
    make_service: MakeService, counted_pki: CountedPKI
) -> None:
    counted_pki.counter.down |= {"ocsp", "crl"}
    outcomes: list[str] = []
    service = await make_service(
        database=None, on_exchange=lambda _up, outcome, _s: outcomes.append(outcome)
    )
    with pytest.raises(RevocationUnavailable, match="Dr Alice Sandbox"):
        await service.revocation_info(chain_of(counted_pki))
    assert outcomes and set(outcomes) == {"unavailable"}


async def test_chain_of_an_untrusted_root_is_refused(
    make_service: MakeService, counted_pki: CountedPKI, sandbox_pki: object
) -> None:
    service = await make_service(database=None)
    foreign = sandbox_pki.signers["sandbox-rsa"]  # type: ignore[attr-defined]
    chain = [*load_certificates(foreign.cert_pem), *load_certificates(foreign.chain_pem)]
    with pytest.raises(RevocationError) as caught:
        await service.revocation_info(chain)
    assert not isinstance(caught.value, RevocationUnavailable)
    assert counted_pki.counter.counts["ocsp"] == 0


async def test_validation_context_for_pyhanko_shares_the_cache(
    make_service: MakeService, counted_pki: CountedPKI
) -> None:
    service = await make_service(database=None)
    chain = chain_of(counted_pki)
    await service.revocation_info(chain)
    for _ in range(5):
        context = service.validation_context(other_certs=chain[1:])
        validator = CertificateValidator(
            chain[0], intermediate_certs=chain[1:], validation_context=context
        )
        path = await validator.async_validate_usage({"non_repudiation"})
        assert path.pkix_len == 2
        # What pyHanko embeds for B-LT: this context's responses, from the cache.
        assert len(context.ocsps) == 2
    assert counted_pki.counter.counts["ocsp"] == 2
