"""POST /v1/timestamps against the sandbox TSA over loopback, checked by openssl.

Faults come from real parts: a tampering proxy in front of the real TSA, a second
certomancer PKI whose TSA we do not trust, a closed port, a listener that drops
every connection, one that never answers.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from asn1crypto import tsp

from sidecar.clients import Scope
from sidecar.config import BreakerSettings, ConfigError, Settings, TrustSettings, TsaSettings
from sidecar.sandbox import SandboxPKI
from tests.fixtures.daemon import Api
from tests.fixtures.trust import CountedPKI, DeadTsa, TamperingProxy

ApiFactory = Callable[..., Awaitable[Api]]
TSQ = {"Content-Type": "application/timestamp-query"}


def trust_settings(*urls: str, threshold: int = 3, attempts: int = 1, **tsa: object) -> Settings:
    return Settings(
        trust=TrustSettings(
            tsa=tuple(TsaSettings(url=u, attempts=attempts, **tsa) for u in urls),  # type: ignore[arg-type]
            breaker=BreakerSettings(failure_threshold=threshold, cool_down=300, retry_delay=0),
        )
    )


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)


def make_query(tmp_path: Path, data: bytes, *options: str) -> Path:
    (tmp_path / "f").write_bytes(data)
    query = tmp_path / "q.tsq"
    result = openssl("ts", "-query", "-data", tmp_path / "f", *options, "-out", query)
    assert result.returncode == 0, result.stderr
    return query


async def post_tsq(api: Api, query: bytes) -> tuple[int, bytes, dict[str, str]]:
    response = await api.client.post("/v1/timestamps", data=query, headers={**api.auth(), **TSQ})
    return response.status, await response.read(), dict(response.headers)


# ---------------------------------------------------------------- the good path


async def test_timestamp_query_relayed_and_verified_by_openssl(
    sandbox_api: Api, sandbox_services: SandboxPKI, tmp_path: Path
) -> None:
    query = make_query(tmp_path, b"<feeNote>42</feeNote>", "-sha256", "-cert")
    status, body, headers = await post_tsq(sandbox_api, query.read_bytes())
    assert status == 200, body
    assert headers["Content-Type"] == "application/timestamp-reply"
    assert headers["X-Timestamp-TSA"] == sandbox_services.tsa_url
    reply = tmp_path / "r.tsr"
    reply.write_bytes(body)
    result = openssl(
        "ts", "-verify", "-queryfile", query, "-in", reply, "-CAfile", sandbox_services.roots_pem
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verification: OK" in result.stdout
    # One byte different: openssl must refuse (the check above could not pass by accident).
    other = make_query(tmp_path, b"<feeNote>43</feeNote>", "-sha256", "-cert")
    result = openssl(
        "ts", "-verify", "-queryfile", other, "-in", reply, "-CAfile", sandbox_services.roots_pem
    )
    assert result.returncode != 0


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
async def test_raw_bytes_with_hash_verified_by_openssl(
    sandbox_api: Api, sandbox_services: SandboxPKI, tmp_path: Path, algorithm: str
) -> None:
    data = b"%PDF-1.7 any bytes at all \x00\xff"
    response = await sandbox_api.client.post(
        f"/v1/timestamps?hash={algorithm}",
        data=data,
        headers={**sandbox_api.auth(), "Content-Type": "application/octet-stream"},
    )
    assert response.status == 200, await response.text()
    body = await response.read()
    tst_info = tsp.TimeStampResp.load(body)["time_stamp_token"]["content"]["encap_content_info"][
        "content"
    ].parsed
    assert tst_info["message_imprint"]["hash_algorithm"]["algorithm"].native == algorithm
    assert (
        tst_info["message_imprint"]["hashed_message"].native
        == hashlib.new(algorithm, data).digest()
    )
    (tmp_path / "f").write_bytes(data)
    (tmp_path / "r.tsr").write_bytes(body)
    result = openssl(
        "ts",
        "-verify",
        "-data",
        tmp_path / "f",
        "-in",
        tmp_path / "r.tsr",
        "-CAfile",
        sandbox_services.roots_pem,
    )
    assert "Verification: OK" in result.stdout, result.stdout + result.stderr


async def test_needs_the_timestamp_scope(sandbox_api: Api) -> None:
    token = sandbox_api.store.create("verify-only", frozenset({Scope.VERIFY}))
    response = await sandbox_api.client.post(
        "/v1/timestamps?hash=sha256", data=b"x", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 403


# ---------------------------------------------------------------- rejected replies


@pytest.mark.parametrize(
    ("mode", "reason", "words"),
    [
        ("nonce", "nonce_mismatch", "nonce"),
        ("imprint", "imprint_mismatch", "imprint"),
        ("signature", "bad_signature", "signature"),
        ("skew", "clock_skew", "local clock"),
    ],
)
async def test_tampered_reply_is_rejected(
    api_factory: ApiFactory,
    sandbox_services: SandboxPKI,
    tampering_proxy: Callable[[str], Awaitable[TamperingProxy]],
    tmp_path: Path,
    mode: str,
    reason: str,
    words: str,
) -> None:
    proxy = await tampering_proxy(sandbox_services.tsa_url)
    proxy.mode = mode
    api = await api_factory(trust_settings(proxy.url), sandbox_pki=sandbox_services)
    query = make_query(tmp_path, b"document", "-sha256", "-cert")
    status, body, headers = await post_tsq(api, query.read_bytes())
    assert status == 502, body
    assert headers["Content-Type"] == "application/problem+json"
    problem = __import__("json").loads(body)
    assert problem["code"] == "upstream_error"
    assert problem["reason"] == reason
    assert words in problem["detail"]
    assert proxy.requests == 1  # a bad reply is not retried at the same TSA
    # The same proxy relaying faithfully is accepted: the rejection was the tampering's.
    proxy.mode = "none"
    status, body, _ = await post_tsq(api, query.read_bytes())
    assert status == 200, body


async def test_untrusted_tsa_is_rejected(
    api_factory: ApiFactory,
    sandbox_services: SandboxPKI,
    counted_pki: CountedPKI,
    tmp_path: Path,
) -> None:
    # A perfectly valid TSA of another PKI: its root is not among our anchors.
    api = await api_factory(trust_settings(counted_pki.pki.tsa_url), sandbox_pki=sandbox_services)
    query = make_query(tmp_path, b"document", "-sha256", "-cert")
    status, body, _ = await post_tsq(api, query.read_bytes())
    assert status == 502, body
    problem = __import__("json").loads(body)
    assert problem["reason"] == "untrusted_tsa"
    assert "trust anchor" in problem["detail"]


async def test_policy_other_than_configured_is_rejected(
    api_factory: ApiFactory, sandbox_services: SandboxPKI, tmp_path: Path
) -> None:
    # certomancer answers with its own policy whatever is asked: not the qualified one.
    settings = trust_settings(sandbox_services.tsa_url, policy="1.2.3.4")
    api = await api_factory(settings, sandbox_pki=sandbox_services)
    response = await api.client.post("/v1/timestamps?hash=sha256", data=b"x", headers=api.auth())
    assert response.status == 502
    assert (await response.json())["reason"] == "policy_mismatch"


# ---------------------------------------------------------------- failover and breaker


async def test_primary_down_second_tsa_answers(
    api_factory: ApiFactory,
    sandbox_services: SandboxPKI,
    closed_port_url: str,
    tmp_path: Path,
) -> None:
    api = await api_factory(
        trust_settings(closed_port_url, sandbox_services.tsa_url), sandbox_pki=sandbox_services
    )
    query = make_query(tmp_path, b"document", "-sha256", "-cert")
    status, body, headers = await post_tsq(api, query.read_bytes())
    assert status == 200, body
    assert headers["X-Timestamp-TSA"] == sandbox_services.tsa_url
    reply = tmp_path / "r.tsr"
    reply.write_bytes(body)
    result = openssl(
        "ts", "-verify", "-queryfile", query, "-in", reply, "-CAfile", sandbox_services.roots_pem
    )
    assert "Verification: OK" in result.stdout


async def test_all_down_503_then_breaker_skips_without_connecting(
    api_factory: ApiFactory,
    sandbox_services: SandboxPKI,
    dead_tsa: Callable[..., Awaitable[DeadTsa]],
    closed_port_url: str,
) -> None:
    dropping = await dead_tsa()
    api = await api_factory(
        trust_settings(dropping.url, closed_port_url, threshold=2, attempts=2),
        sandbox_pki=sandbox_services,
    )
    admin = api.store.create("ops", frozenset({Scope.ADMIN}))

    async def attempt() -> tuple[int, dict[str, object], dict[str, str]]:
        response = await api.client.post(
            "/v1/timestamps?hash=sha256", data=b"x", headers=api.auth()
        )
        return response.status, await response.json(), dict(response.headers)

    for round_ in (1, 2):
        status, problem, headers = await attempt()
        assert status == 503
        assert problem["code"] == "upstream_unavailable"
        assert int(headers["Retry-After"]) >= 1
        # Two attempts per round (bounded retry), never more.
        assert dropping.accepted == 2 * round_

    # Both circuits are open now: the next requests do not touch the TSAs at all.
    status, problem, headers = await attempt()
    assert status == 503
    assert problem["reason"] == "circuit_open"
    assert 1 <= int(headers["Retry-After"]) <= 300
    assert dropping.accepted == 4
    for _ in range(5):
        await attempt()
    assert dropping.accepted == 4

    health = await api.client.get("/v1/health", headers={"Authorization": f"Bearer {admin}"})
    checks = {c["name"]: c for c in (await health.json())["checks"]}
    assert checks["tsa"]["status"] == "down"
    assert [t["state"] for t in checks["tsa"]["data"]["tsa"]] == ["open", "open"]


async def test_tsa_that_never_answers_is_504(
    api_factory: ApiFactory,
    sandbox_services: SandboxPKI,
    dead_tsa: Callable[..., Awaitable[DeadTsa]],
) -> None:
    silent = await dead_tsa("silent")
    api = await api_factory(
        trust_settings(silent.url, timeout=0.3, attempts=3), sandbox_pki=sandbox_services
    )
    response = await api.client.post("/v1/timestamps?hash=sha256", data=b"x", headers=api.auth())
    assert response.status == 504
    assert (await response.json())["code"] == "upstream_timeout"
    assert silent.accepted == 1  # a timeout is not retried: it already cost its budget


async def test_no_tsa_configured_is_503(api: Api) -> None:
    response = await api.client.post("/v1/timestamps?hash=sha256", data=b"x", headers=api.auth())
    assert response.status == 503
    body = await response.json()
    assert body["reason"] == "not_configured"
    assert "Retry-After" in response.headers


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("path", "content_type", "body", "words"),
    [
        ("/v1/timestamps", "application/timestamp-query", b"", "empty"),
        ("/v1/timestamps", "application/timestamp-query", b"\x30\x03garbage", "TimeStampReq"),
        ("/v1/timestamps", "application/octet-stream", b"bytes", "?hash="),
        ("/v1/timestamps?hash=md5", "application/octet-stream", b"bytes", "sha256"),
        ("/v1/timestamps?hash=sha256", "application/octet-stream", b"", "empty"),
    ],
)
async def test_bad_input_is_a_clear_400(
    sandbox_api: Api, path: str, content_type: str, body: bytes, words: str
) -> None:
    response = await sandbox_api.client.post(
        path, data=body, headers={**sandbox_api.auth(), "Content-Type": content_type}
    )
    assert response.status == 400
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = await response.json()
    assert problem["code"] == "bad_parameter"
    assert words in problem["detail"]


async def test_weak_hash_query_is_refused(sandbox_api: Api, tmp_path: Path) -> None:
    query = make_query(tmp_path, b"document", "-sha1", "-cert")
    status, body, _ = await post_tsq(sandbox_api, query.read_bytes())
    assert status == 400
    assert b"sha1" in body


async def test_unusable_trust_configuration_refuses_to_start(api_factory: ApiFactory) -> None:
    settings = Settings(
        trust=TrustSettings(
            tsa=(TsaSettings(url="https://t/", username="u", password_env="SIDECAR_TEST_NO_PW"),)
        )
    )
    with pytest.raises(ConfigError, match="SIDECAR_TEST_NO_PW is not set"):
        await api_factory(settings)
