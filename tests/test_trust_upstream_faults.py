"""Upstream faults of the trust layer, with real parts: the host that serves the TSA's
issuer certificate, OCSP and CRLs unreachable while the TSA itself is healthy; a TSA
answering garbage.

The counted PKI (``counted_pki``) serves its TSA, OCSP, CRLs and certificates from one
loopback app whose services can be made to answer 503 one by one; its TSA's tokens
carry the TSA's certificate only, so its issuing CA must be fetched (caIssuers).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from sidecar.api.appkeys import SERVICES
from sidecar.config import (
    BreakerSettings,
    RevocationSettings,
    SandboxSettings,
    Settings,
    TrustSettings,
    TsaSettings,
)
from sidecar.sandbox import SandboxPKI
from tests.fixtures.cns import SimulatorThread, cns_settings, unsigned_fee_note, wait_status
from tests.fixtures.daemon import Api
from tests.fixtures.trust import CountedPKI

ApiFactory = Callable[..., Awaitable[Api]]
ISSUER_HOST = {"certs", "ocsp", "crl"}


@pytest.fixture
def counted(counted_pki: CountedPKI) -> Iterator[CountedPKI]:
    """The session's counted PKI, every service up again afterwards."""
    counted_pki.counter.reset()
    yield counted_pki
    counted_pki.counter.reset()


def settings_for(pki: SandboxPKI, tmp_path: Path, **cns: object) -> Settings:
    # A breaker that opens at the first failure: any verdict against the TSA shows.
    trust = TrustSettings(
        tsa=(TsaSettings(url=pki.tsa_url, attempts=1),),
        breaker=BreakerSettings(failure_threshold=1, cool_down=300, retry_delay=0),
        revocation=RevocationSettings(cache_file=tmp_path / "revocation.sqlite3", timeout=3),
    )
    base = cns_settings(str(cns.pop("cns_url", "http://127.0.0.1:9")), **cns)
    return dataclasses.replace(base, trust=trust, sandbox=SandboxSettings(softhsm=False))


async def stamp(api: Api) -> tuple[int, dict[str, str], bytes]:
    response = await api.client.post("/v1/timestamps?hash=sha256", data=b"x", headers=api.auth())
    return response.status, dict(response.headers), await response.read()


def breaker(api: Api) -> tuple[str, int]:
    (status,) = api.client.app[SERVICES].trust.tsa.status()
    return status.breaker.state, status.breaker.consecutive_failures


async def test_issuer_host_down_is_503_and_the_tsa_breaker_stays_closed(
    api_factory: ApiFactory, counted: CountedPKI, tmp_path: Path
) -> None:
    counted.counter.down = set(ISSUER_HOST)
    api = await api_factory(settings_for(counted.pki, tmp_path), sandbox_pki=counted.pki)
    for _ in range(2):
        status, headers, body = await stamp(api)
        assert status == 503, body
        problem = __import__("json").loads(body)
        assert problem["code"] == "upstream_unavailable"
        assert problem["reason"] == "issuer_unavailable"
        assert int(headers["Retry-After"]) >= 1
        assert "does not chain" not in problem["detail"]
        assert breaker(api) == ("closed", 0)
    assert counted.counter.counts["tsa"] == 2  # the TSA was asked each time, not skipped

    # The host is back: the very next request works (no open breaker to wait out).
    counted.counter.down.clear()
    status, _, body = await stamp(api)
    assert status == 200, body


async def test_fetched_issuer_is_kept_on_disk_for_a_restart_with_the_host_down(
    api_factory: ApiFactory, counted: CountedPKI, tmp_path: Path
) -> None:
    settings = settings_for(counted.pki, tmp_path)
    first = await api_factory(settings, sandbox_pki=counted.pki)
    status, _, body = await stamp(first)
    assert status == 200, body
    assert counted.counter.counts["certs"] >= 1  # fetched once, from the caIssuers URL
    await first.client.close()

    counted.counter.down = set(ISSUER_HOST)
    fetched = counted.counter.counts["certs"]
    again = await api_factory(settings, sandbox_pki=counted.pki)  # same cache file
    status, _, body = await stamp(again)
    assert status == 200, body
    assert counted.counter.counts["certs"] == fetched  # not asked: the kept copy served


@pytest.fixture
def simulator_url(stand_in_xsd: Path) -> Iterator[str]:
    from sidecar.cns.simulator import CnsSimulator

    thread = SimulatorThread(CnsSimulator(xsd=None, seed=3)).start()
    yield thread.url
    thread.stop()


async def test_offline_mode_holds_the_deposit_while_the_issuer_host_is_down(
    api_factory: ApiFactory,
    counted: CountedPKI,
    tmp_path: Path,
    fee_note_pdf: bytes,
    simulator_url: str,
) -> None:
    counted.counter.down = set(ISSUER_HOST)
    settings = settings_for(counted.pki, tmp_path, cns_url=simulator_url, defer_timestamp=True)
    api = await api_factory(settings, sandbox_pki=counted.pki)
    note_uuid = str(uuid.uuid4())
    response = await api.client.post(
        "/v1/cns/fee-notes",
        data=unsigned_fee_note(note_uuid, fee_note_pdf),
        headers={**api.auth(), "Content-Type": "application/xml"},
    )
    assert response.status == 202, await response.text()
    assert (await response.json())["status"] == "awaiting_timestamp"
    assert breaker(api) == ("closed", 0)

    counted.counter.down.clear()  # back: the held note is raised to B-LT and sent
    message = await wait_status(api, note_uuid, {"delivered", "rejected", "failed"}, timeout=60)
    assert message["level"] == "B-LT"
    assert message["status"] == "delivered", message


@pytest.fixture
async def garbage_tsa() -> AsyncIterator[str]:
    """A "TSA" answering 200 with a DER structure that is no TimeStampResp: its PKIStatus
    is a 300-digit INTEGER (a fault no real TSA here produces on demand)."""
    number = b"\x02\x81\x80" + b"\x7f" * 128
    status = b"\x30\x81" + bytes([len(number)]) + number
    body = b"\x30\x81" + bytes([len(status) + 2]) + status + b"\x30\x00"

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/timestamp-reply")

    app = web.Application()
    app.router.add_post("/tsa", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/tsa"
    await runner.cleanup()


async def test_garbage_reply_gets_a_human_detail_and_the_cause_in_the_log(
    api_factory: ApiFactory,
    sandbox_services: SandboxPKI,
    garbage_tsa: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    trust = TrustSettings(tsa=(TsaSettings(url=garbage_tsa, attempts=1),))
    api = await api_factory(Settings(trust=trust), sandbox_pki=sandbox_services)
    with caplog.at_level(logging.WARNING, logger="sidecar.trust.tsa"):
        response = await api.client.post(
            "/v1/timestamps?hash=sha256",
            data=b"x",
            headers={**api.auth(), "X-Request-Id": "garbage-reply-1"},
        )
    problem = await response.json()
    assert response.status == 502
    assert problem["reason"] == "malformed"
    assert "is not an RFC 3161 TimeStampResp" in problem["detail"]
    assert not re.search(r"\d{20,}", problem["detail"]), problem["detail"]
    causes = [r for r in caplog.records if "not a TimeStampResp" in r.getMessage()]
    assert causes and getattr(causes[0], "request_id", None) == "garbage-reply-1"
    assert re.search(r"\d{20,}", causes[0].getMessage())  # the raw cause, for whoever debugs


async def test_signing_routes_answer_503_while_the_issuer_host_is_down(
    api_factory: ApiFactory, counted: CountedPKI, tmp_path: Path, fee_note_pdf: bytes
) -> None:
    counted.counter.down = set(ISSUER_HOST)
    api = await api_factory(settings_for(counted.pki, tmp_path), sandbox_pki=counted.pki)
    xml = b'<?xml version="1.0"?><a xmlns="urn:x"><b>1</b></a>'
    for level in ("B-T", "B-LT"):
        for route, body, kind in (
            ("/v1/xml/sign", xml, "application/xml"),
            ("/v1/pdf/sign", fee_note_pdf, "application/pdf"),
        ):
            response = await api.client.post(
                f"{route}?level={level}",
                data=body,
                headers={**api.auth(), "Content-Type": kind},
            )
            problem = await response.json()
            assert response.status == 503, (route, level, problem)
            assert problem["code"] == "upstream_unavailable"
            assert "Retry-After" in response.headers
    assert breaker(api) == ("closed", 0)
