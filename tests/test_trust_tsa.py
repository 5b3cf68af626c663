"""The TSA client as the engines use it, its circuit breaker, anchors and configuration."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from asn1crypto import cms, pem

from sidecar.config import BreakerSettings, ConfigError, TsaSettings, load_settings
from sidecar.sandbox import SandboxPKI
from sidecar.trust import (
    AnchorError,
    CircuitBreaker,
    TimeStampClient,
    TrustAnchors,
    TsaEndpoint,
    TsaReplyError,
    TsaUnavailable,
    load_certificates,
)
from sidecar.trust.tsa import _check_tsa_eku, make_request, parse_request
from tests.fixtures.trust import TamperingProxy


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


# ---------------------------------------------------------------- breaker


def test_breaker_opens_after_threshold_and_half_opens_after_cool_down() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cool_down=30, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    assert breaker.status().retry_after == 30
    clock.now += 29.5
    assert not breaker.allow()
    clock.now += 1
    assert breaker.state == "half_open"
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one at a time
    breaker.record_failure()  # a failed probe re-opens for a full cool-down
    assert breaker.state == "open"
    clock.now += 30
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.allow() and breaker.allow()


def test_breaker_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2, cool_down=5, clock=FakeClock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed"


async def test_half_open_probe_closes_the_circuit_once_the_tsa_is_back(
    session: aiohttp.ClientSession,
    sandbox_services: SandboxPKI,
    tampering_proxy: Callable[[str], Awaitable[TamperingProxy]],
) -> None:
    proxy = await tampering_proxy(sandbox_services.tsa_url)
    proxy.mode = "http503"  # overloaded: answers, but 503
    clock = FakeClock()
    client = TimeStampClient(
        session,
        [TsaEndpoint(proxy.url, attempts=1)],
        TrustAnchors.load([sandbox_services.roots_pem]),
        breaker=BreakerSettings(failure_threshold=2, cool_down=60, retry_delay=0),
        clock=clock,
    )
    digest = hashlib.sha256(b"x").digest()
    for _ in range(2):
        with pytest.raises(TsaReplyError):
            await client.timestamp(digest)
    assert client.status()[0].breaker.state == "open"
    with pytest.raises(TsaUnavailable) as caught:
        await client.timestamp(digest)
    assert caught.value.reason == "circuit_open"
    assert 0 < caught.value.retry_after <= 60
    assert proxy.requests == 2

    proxy.mode = "none"
    clock.now += 61
    token = await client.timestamp(digest)
    assert token.imprint == digest
    assert client.status()[0].breaker.state == "closed"
    assert proxy.requests == 3


# ---------------------------------------------------------------- engine-facing API


async def test_engine_timestamp_is_checked_and_verifies_with_openssl(
    session: aiohttp.ClientSession, sandbox_services: SandboxPKI, tmp_path: Path
) -> None:
    client = TimeStampClient(
        session,
        [TsaEndpoint(sandbox_services.tsa_url)],
        TrustAnchors.load([sandbox_services.roots_pem]),
    )
    signature_value = b"<ds:SignatureValue>abc</ds:SignatureValue>"
    digest = hashlib.sha256(signature_value).digest()
    token = await client.timestamp(digest, "sha256")
    assert token.imprint == digest
    assert token.hash_algorithm == "sha256"
    assert token.tsa_url == sandbox_services.tsa_url
    # TSA certificate first, up to the anchor: what B-LT's CertificateValues needs.
    assert [c.subject.native["common_name"].split(" ")[2] for c in token.chain] == [
        "TSA",
        "Issuing",
        "Root",
    ]
    (tmp_path / "tst.der").write_bytes(token.der)
    (tmp_path / "data").write_bytes(signature_value)
    bundle = tmp_path / "untrusted.pem"
    bundle.write_bytes(b"".join(pem.armor("CERTIFICATE", c.dump()) for c in token.chain[1:-1]))
    result = subprocess.run(
        [
            "openssl",
            "ts",
            "-verify",
            "-data",
            tmp_path / "data",
            "-in",
            tmp_path / "tst.der",
            "-token_in",
            "-CAfile",
            sandbox_services.roots_pem,
            "-untrusted",
            bundle,
        ],
        capture_output=True,
        text=True,
    )
    assert "Verification: OK" in result.stdout, result.stdout + result.stderr


async def test_pyhanko_timestamper_goes_through_the_checked_client(
    session: aiohttp.ClientSession,
    sandbox_services: SandboxPKI,
    tampering_proxy: Callable[[str], Awaitable[TamperingProxy]],
) -> None:
    proxy = await tampering_proxy(sandbox_services.tsa_url)
    client = TimeStampClient(
        session,
        [TsaEndpoint(proxy.url, attempts=1)],
        TrustAnchors.load([sandbox_services.roots_pem]),
    )
    stamper = client.timestamper()
    assert client.timestamper() is stamper  # reused: pyHanko's size estimate costs a call
    digest = hashlib.sha256(b"pdf byte range").digest()
    token = await stamper.async_timestamp(digest, "sha256")
    assert isinstance(token, cms.ContentInfo)
    tst_info = token["content"]["encap_content_info"]["content"].parsed
    assert tst_info["message_imprint"]["hashed_message"].native == digest
    # Unlike pyHanko's HTTPTimeStamper, a bad imprint is refused.
    proxy.mode = "imprint"
    with pytest.raises(TsaReplyError, match="imprint"):
        await stamper.async_timestamp(digest, "sha256")


def test_tsa_certificate_needs_exactly_critical_timestamping_eku(
    sandbox_pki: SandboxPKI,
) -> None:
    def fail(reason: str, message: str) -> TsaReplyError:
        return TsaReplyError(message, reason=reason)

    (tsa_cert,) = load_certificates(sandbox_pki.tsa_cert_pem)
    _check_tsa_eku(tsa_cert, fail)
    # The OCSP responder's certificate has a critical EKU too, but OCSPSigning.
    (ocsp_cert,) = load_certificates(sandbox_pki.ocsp_cert_pems["intermediate"])
    with pytest.raises(TsaReplyError) as caught:
        _check_tsa_eku(ocsp_cert, fail)
    assert caught.value.reason == "bad_eku"
    (root,) = load_certificates(sandbox_pki.roots_pem)
    with pytest.raises(TsaReplyError, match="no extended key usage"):
        _check_tsa_eku(root, fail)


def test_requests_carry_nonce_and_cert_req() -> None:
    digest = hashlib.sha384(b"x").digest()
    first = make_request(digest, "sha384", policy="1.2.3.4")
    second = make_request(digest, "sha384")
    assert first["cert_req"].native is True
    assert first["req_policy"].dotted == "1.2.3.4"
    assert first["nonce"].native != second["nonce"].native
    assert parse_request(first.dump())["nonce"].native == first["nonce"].native
    with pytest.raises(ValueError, match="48 bytes"):
        make_request(digest[:20], "sha384")
    with pytest.raises(ValueError, match="not accepted"):
        make_request(hashlib.md5(b"x").digest(), "md5")  # noqa: S324


# ---------------------------------------------------------------- anchors and configuration


def test_anchors_from_files_and_directory(sandbox_pki: SandboxPKI, tmp_path: Path) -> None:
    directory = tmp_path / "anchors"
    directory.mkdir()
    (root,) = load_certificates(sandbox_pki.roots_pem)
    (directory / "root.der").write_bytes(root.dump())
    (directory / "README.md").write_text("not a certificate")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(sandbox_pki.roots_pem.read_bytes() + sandbox_pki.tsa_cert_pem.read_bytes())
    anchors = TrustAnchors.load([bundle], [directory])
    assert len(anchors) == 2  # the root twice (DER and PEM) counts once
    assert root in anchors
    assert anchors.pem_bundle().count(b"BEGIN CERTIFICATE") == 2
    (directory / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n")
    with pytest.raises(AnchorError, match=r"broken\.pem"):
        TrustAnchors.load([], [directory])


def test_tsa_settings_from_toml_and_password_sources(tmp_path: Path) -> None:
    config = tmp_path / "sidecar.toml"
    (tmp_path / "tsa.pass").write_text("s3cret-from-file\n")
    config.write_text(
        '[trust]\nclock_skew = 30\nanchors_dir = "anchors"\n'
        "[trust.breaker]\nfailure_threshold = 5\n"
        '[[trust.tsa]]\nurl = "https://tsa.incert.lu/tsa"\npolicy = "1.2.3.4"\n'
        'username = "cabinet"\npassword_file = "tsa.pass"\ntimeout = 4\n'
        '[[trust.tsa]]\nurl = "http://fallback.example/tsa"\n'
    )
    trust = load_settings(config).trust
    assert trust.clock_skew == 30
    assert trust.anchors_dir == tmp_path / "anchors"
    assert trust.breaker.failure_threshold == 5
    assert [t.url for t in trust.tsa] == [
        "https://tsa.incert.lu/tsa",
        "http://fallback.example/tsa",
    ]
    endpoint = TsaEndpoint.from_settings(trust.tsa[0])
    assert endpoint.authorization == aiohttp.encode_basic_auth("cabinet", "s3cret-from-file")
    assert "s3cret" not in repr(endpoint)
    assert endpoint.timeout == 4 and endpoint.policy == "1.2.3.4"

    from_env = TsaSettings(url="https://t/", username="u", password_env="TSA_PW")
    with_env = TsaEndpoint.from_settings(from_env, environ={"TSA_PW": "pw-env"})
    assert with_env.authorization == aiohttp.encode_basic_auth("u", "pw-env")
    with pytest.raises(ValueError, match="TSA_PW is not set"):
        TsaEndpoint.from_settings(from_env, environ={})

    config.write_text('[[trust.tsa]]\nurl = "https://t/"\npolicy = "not-an-oid"\n')
    with pytest.raises(ConfigError, match="object identifier"):
        load_settings(config)
    config.write_text('[[trust.tsa]]\nurll = "https://t/"\n')
    with pytest.raises(ConfigError, match="did you mean 'url'"):
        load_settings(config)


async def test_basic_auth_per_tsa(
    session: aiohttp.ClientSession,
    sandbox_services: SandboxPKI,
    tampering_proxy: Callable[[str], Awaitable[TamperingProxy]],
    tmp_path: Path,
) -> None:
    proxy = await tampering_proxy(sandbox_services.tsa_url)
    proxy.required_authorization = aiohttp.encode_basic_auth("cabinet", "right")
    anchors = TrustAnchors.load([sandbox_services.roots_pem])
    digest = hashlib.sha256(b"x").digest()

    def client(password: str) -> TimeStampClient:
        settings = TsaSettings(url=proxy.url, username="cabinet", password_env="PW", attempts=1)
        endpoint = TsaEndpoint.from_settings(settings, environ={"PW": password})
        return TimeStampClient(session, [endpoint], anchors)

    assert (await client("right").timestamp(digest)).imprint == digest
    with pytest.raises(TsaReplyError, match=r"401.*credentials"):
        await client("wrong").timestamp(digest)
