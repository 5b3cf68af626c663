"""The sandbox's own trusted lists, end to end: served over loopback, fetched, verified,
cached, and used in /v1/verify (qualification of the signer and of the timestamp).

Each test has its own sandbox PKI (its lists are rewritten here: the TSA withdrawn).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from sidecar.api.appkeys import PATHS, SERVICES
from sidecar.config import ListSettings, SandboxSettings, Settings, TrustSettings
from sidecar.doctor import DoctorContext, Finding, run_doctor
from sidecar.sandbox import SandboxPKI, serve_sandbox_pki
from sidecar.sandbox.lists import ensure_sandbox_lists, sandbox_list_policy, write_sandbox_lists
from sidecar.signing.profiles import BUNDLED_PROFILE_DIR
from sidecar.trust.anchors import TrustAnchors
from sidecar.trust.doctor_checks import check_trusted_lists
from sidecar.trust.lists import ListCache, read_lists
from sidecar.trust.service import with_list_anchors
from tests.fixtures.daemon import Api
from tests.fixtures.sandbox import MakeSandboxPKI
from tests.fixtures.xades import FORM

XML = {"Content-Type": "application/xml"}
PDF = (BUNDLED_PROFILE_DIR / "samples" / "fee-note.pdf").read_bytes()
pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _lists_loaded(api: Api, deadline: float = 60.0) -> None:
    trust = api.client.server.app[SERVICES].trust
    assert trust.lists is not None
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not trust.lists.current.usable:
        assert loop.time() < end, trust.lists.as_json()
        await asyncio.sleep(0.1)


async def _sign_and_verify(api: Api, qualification: str) -> dict[str, object]:
    response = await api.client.post(
        "/v1/xml/sign", data=FORM, headers={**api.auth("signer"), **XML}
    )
    assert response.status == 200, await response.text()
    assert response.headers["X-Signature-Qualification"] == qualification
    response = await api.client.post(
        "/v1/verify", data=await response.read(), headers={**api.auth("verifier"), **XML}
    )
    (report,) = (await response.json())["signatures"]
    assert (report["level"], report["indication"]) == ("B-LT", "TOTAL_PASSED"), report
    return report


async def _doctor(api: Api, pki: SandboxPKI) -> dict[str, Finding]:
    app = api.client.server.app
    async with aiohttp.ClientSession() as session:
        ctx = DoctorContext(
            paths=app[PATHS],
            settings=Settings(),
            sandbox=True,
            session=session,
            timeout=10.0,
            _sandbox_pki=pki,
        )
        report = await run_doctor(ctx, [("trusted-lists", check_trusted_lists)])
    return {f.check: f for f in report.findings}


async def test_sandbox_signature_is_qualified_until_the_tsa_is_withdrawn(
    api_factory: Callable[..., Awaitable[Api]],
    make_sandbox_pki: MakeSandboxPKI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pki = make_sandbox_pki()
    async with serve_sandbox_pki(pki):
        api = await api_factory(Settings(sandbox=SandboxSettings(softhsm=False)), sandbox_pki=pki)
        await _lists_loaded(api)
        report = await _sign_and_verify(api, "QESig; timestamp=qualified")
        qualification = report["qualification"]
        assert isinstance(qualification, dict)
        # The sandbox CA/QC service says QCStatement + QCForESig + QCWithQSCD.
        assert qualification["signature"] == "QESig", qualification
        assert qualification["qscd"] is True
        assert qualification["at_signing_time"]["service"] == "Sidecar Sandbox Issuing CA"
        assert qualification["qualified_timestamp"] is True
        (stamp,) = qualification["timestamps"]
        assert stamp["qualified"] is True and stamp["service"] == "Sidecar Sandbox TSA"
        assert qualification["trusted_lists"] == "current"
        # A PAdES B-LT signature likewise.
        response = await api.client.post(
            "/v1/pdf/sign?level=B-LT",
            data=PDF,
            headers={**api.auth("signer"), "Content-Type": "application/pdf"},
        )
        assert response.status == 200, await response.text()
        assert response.headers["X-Signature-Qualification"] == "QESig; timestamp=qualified"
        response = await api.client.post(
            "/v1/verify",
            data=await response.read(),
            headers={**api.auth("verifier"), "Content-Type": "application/pdf"},
        )
        (pdf_report,) = (await response.json())["signatures"]
        assert pdf_report["level"] == "B-LT", pdf_report
        assert pdf_report["qualification"]["signature"] == "QESig"
        assert pdf_report["qualification"]["qualified_timestamp"] is True

        # The doctor: each list's age and state, the signers' and the TSA's qualification.
        found = await _doctor(api, pki)
        assert found["trusted-list:LU"].status == "ok", {
            k: (f.status, f.summary) for k, f in found.items()
        }
        assert 0 <= found["trusted-list:LU"].data["age_seconds"] < 600
        assert "fetched 0 h ago" in found["trusted-list:EU"].summary
        assert found["qualification:key:sandbox-rsa"].status == "ok"
        assert found["qualification:key:sandbox-rsa"].summary.startswith("QESig")
        assert found["qualification:tsa:127.0.0.1"].status == "ok"
        response = await api.client.get("/v1/health", headers=api.auth("all"))
        card = next(c for c in (await response.json())["checks"] if c["name"] == "trusted-lists")
        assert card["status"] == "ok", card
        assert (
            card["detail"] == "EU current, LU current; signatures now: QESig; timestamp=qualified"
        )

        # The TSA's QTST service withdrawn an hour ago: a new timestamp is not qualified.
        app = api.client.server.app
        write_sandbox_lists(pki, tsa_withdrawn=datetime.now(UTC) - timedelta(hours=1))
        assert await app[SERVICES].trust.lists.refresh(app[SERVICES].http) == []
        # Signing warns by default: signed, and the answer says the timestamp is not qualified.
        report = await _sign_and_verify(api, "QESig; timestamp=not-qualified")
        qualification = report["qualification"]
        assert qualification["signature"] == "QESig"
        assert qualification["qualified_timestamp"] is False
        assert qualification["timestamps"][0]["qualified"] is False
        assert any("not a granted QTST" in m for m in report["messages"])
        tsa_finding = (await _doctor(api, pki))["qualification:tsa:127.0.0.1"]
        assert tsa_finding.status == "warn" and "not a granted QTST" in tsa_finding.summary
        # The status page's card (a health check, admin only): degraded, and why.
        response = await api.client.get("/v1/health", headers=api.auth("all"))
        card = next(c for c in (await response.json())["checks"] if c["name"] == "trusted-lists")
        assert card["status"] == "degraded" and "is not a granted QTST" in card["detail"]
        assert card["data"]["signing"]["qualification"] == "QESig; timestamp=not-qualified"

        # Once cached, the lists are read with no network at all.
        def refuse(*args: object, **kwargs: object) -> socket.socket:
            raise AssertionError("the trusted lists opened a socket")

        cache: ListCache = app[SERVICES].trust.lists.cache
        policy = sandbox_list_policy(ensure_sandbox_lists(pki))
        with monkeypatch.context() as patch:
            patch.setattr(socket, "socket", refuse)
            patch.setattr(socket, "create_connection", refuse)
            offline = read_lists(cache, policy)
        assert offline.usable and offline.problems == ()
        assert {i.key: i.state for i in offline.lists} == {"EU": "current", "LU": "current"}

        # at_signing = "refuse": no signature with a TSA that is not a granted QTST.
        strict = Settings(
            sandbox=SandboxSettings(softhsm=False),
            trust=TrustSettings(lists=ListSettings(at_signing="refuse")),
        )
        refusing = await api_factory(strict, sandbox_pki=pki)
        await _lists_loaded(refusing)
        headers = {**refusing.auth("signer"), **XML}
        # Its TSA's chain is not known before its first timestamp: that one is judged
        # after it, and the signed document is not handed out.
        response = await refusing.client.post("/v1/xml/sign", data=FORM, headers=headers)
        assert response.status == 422, await response.text()
        problem = await response.json()
        assert problem["code"] == "not_qualified"
        assert "is not a granted QTST" in problem["detail"]
        assert response.headers["X-Signature-Qualification"] == "QESig; timestamp=not-qualified"
        # Now known: refused before signing (no TSA request is spent on it).
        tsa = refusing.client.server.app[SERVICES].trust.tsa
        before = tsa.attempts(pki.tsa_url)
        response = await refusing.client.post("/v1/xml/sign", data=FORM, headers=headers)
        assert response.status == 422
        assert tsa.attempts(pki.tsa_url) == before


def _sidecar(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "SIDECAR_HOME": str(home)},
    )


async def test_trust_refresh_then_lists_offline(
    make_sandbox_pki: MakeSandboxPKI, tmp_path: Path
) -> None:
    pki = make_sandbox_pki()
    lists = write_sandbox_lists(pki, sequence=2)
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "sidecar.toml").write_text(
        "[trust.lists]\nenabled = true\n"
        f'lotl_url = "{lists.lotl_url}"\nlotl_signers = "{lists.directory / "signer.pem"}"\n'
    )
    async with serve_sandbox_pki(pki):
        done = await asyncio.to_thread(_sidecar, home, "trust", "refresh")
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("EU  current  sequence 1")
        assert "LU  current  sequence 2" in done.stdout and "!" not in done.stdout
        # An older list (sequence 1) served later does not replace the cached one.
        write_sandbox_lists(pki, sequence=1)
        done = await asyncio.to_thread(_sidecar, home, "trust", "refresh")
        assert "! refresh: trusted list LU: older than the cached copy" in done.stdout
        assert "LU  current  sequence 2" in done.stdout
        # A list whose signature no longer verifies is not taken; the cached one stays.
        lu = lists.directory / "lu.xml"
        lu.write_bytes(lu.read_bytes().replace(b"Sidecar Sandbox TSA", b"Sidecar Sandbox TSA!", 1))
        done = await asyncio.to_thread(_sidecar, home, "trust", "refresh")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "! refresh: trusted list LU: XML signature does not verify" in done.stdout
        assert "LU  current" in done.stdout
    # The sandbox is no longer served: the cache alone answers.
    done = await asyncio.to_thread(_sidecar, home, "trust", "lists", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert [(i["list"], i["state"]) for i in report["lists"]] == [
        ("EU", "current"),
        ("LU", "current"),
    ]
    # A damaged LOTL in the cache (its SHA-256 no longer matches): nothing is used.
    (home / "trusted-lists" / "EU.xml").write_text("<TrustServiceStatusList>")
    done = await asyncio.to_thread(_sidecar, home, "trust", "lists")
    assert done.returncode == 1
    assert "trusted list EU" in done.stdout


async def test_lists_refresh_on_their_schedule(
    api_factory: Callable[..., Awaitable[Api]], make_sandbox_pki: MakeSandboxPKI
) -> None:
    pki = make_sandbox_pki()
    settings = Settings(
        sandbox=SandboxSettings(softhsm=False),
        trust=TrustSettings(lists=ListSettings(refresh_interval=1.0)),
    )
    async with serve_sandbox_pki(pki):
        api = await api_factory(settings, sandbox_pki=pki)
        await _lists_loaded(api)
        lists = api.client.server.app[SERVICES].trust.lists
        first = lists.last_refresh
        # The TSA withdrawn on the server: the next scheduled refresh takes it in.
        write_sandbox_lists(pki, tsa_withdrawn=datetime.now(UTC) - timedelta(hours=1))
        loop = asyncio.get_running_loop()
        end = loop.time() + 60
        while lists.current.tsa_certificates(datetime.now(UTC)):
            assert loop.time() < end, lists.as_json()
            await asyncio.sleep(0.2)
        assert lists.last_refresh is not None and lists.last_refresh != first


async def test_a_listed_ca_under_a_configured_root_stays_an_intermediate(
    make_sandbox_pki: MakeSandboxPKI, tmp_path: Path
) -> None:
    pki = make_sandbox_pki()
    published = write_sandbox_lists(pki)
    cache = ListCache(tmp_path / "lists")
    now = datetime.now(UTC)
    cache.put("EU", published.lotl_url, now, (published.directory / "eu-lotl.xml").read_text())
    cache.put("LU", published.lu_url, now, (published.directory / "lu.xml").read_text())
    lists = read_lists(cache, sandbox_list_policy(published), now)
    listed = lists.ca_certificates(now) + lists.tsa_certificates(now)
    assert len(listed) == 2  # the issuing CA (CA/QC) and the TSA (QTST)
    # The sandbox root configured: the issuing CA and the TSA chain to it, so they are
    # not made anchors (B-LT signatures keep carrying the CA's revocation data).
    root = TrustAnchors.load([pki.roots_pem])
    assert with_list_anchors(root, lists, now).certificates == root.certificates
    # No root configured: both are anchors.
    alone = with_list_anchors(TrustAnchors.of([]), lists, now)
    assert {c.sha256 for c in alone.certificates} == {c.sha256 for c in listed}
