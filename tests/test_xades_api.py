"""POST /v1/xml/sign and POST /v1/verify (XML) through the HTTP API."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from sidecar.api.appkeys import SERVICES
from sidecar.config import (
    ConfigError,
    Settings,
    SigningSettings,
    TrustSettings,
    TsaSettings,
    load_settings,
)
from sidecar.sandbox import SandboxPKI
from sidecar.signing.profiles import BUNDLED_PROFILE_DIR
from sidecar.signing.workers import PoolKind
from sidecar.signing.xades import draft_signature
from tests.fixtures.daemon import Api
from tests.fixtures.trust import DeadTsa
from tests.fixtures.xades import FORM, xmlsec1_verify

XML = {"Content-Type": "application/xml"}
FEE_NOTE_XML = (BUNDLED_PROFILE_DIR / "samples" / "fee-note.xml").read_bytes()


async def test_sign_then_verify(sandbox_api: Api, sandbox_services: SandboxPKI) -> None:
    headers = {**sandbox_api.auth("signer"), **XML}
    response = await sandbox_api.client.post("/v1/xml/sign", data=FORM, headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["X-Signature-Level"] == "B-LT"  # the default
    signed = await response.read()
    start, end = signed.index(b"<ds:Signature"), signed.index(b"</ds:Signature>") + 15
    assert signed[:start] + signed[end:] == FORM
    done = xmlsec1_verify(signed, sandbox_services.roots_pem)
    assert done.returncode == 0, done.stderr

    response = await sandbox_api.client.post(
        "/v1/verify", data=signed, headers={**sandbox_api.auth("verifier"), **XML}
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    (report,) = body["signatures"]
    assert report["level"] == "B-LT"
    assert report["indication"] == "TOTAL_PASSED", report
    assert report["offline_validation_data"] is True
    assert report["timestamp_time"] and report["claimed_signing_time"]

    tampered = signed.replace(b">42.00<", b">42.01<")
    response = await sandbox_api.client.post(
        "/v1/verify", data=tampered, headers={**sandbox_api.auth("verifier"), **XML}
    )
    (report,) = (await response.json())["signatures"]
    assert (report["indication"], report["sub_indication"]) == ("TOTAL_FAILED", "HASH_FAILURE")


async def test_parameters(sandbox_api: Api) -> None:
    headers = {**sandbox_api.auth("signer"), **XML}
    post = sandbox_api.client.post
    response = await post("/v1/xml/sign?level=B-B&key=sandbox-ec", data=FORM, headers=headers)
    assert response.status == 200 and response.headers["X-Signature-Level"] == "B-B"
    assert b"ecdsa-sha256" in await response.read()
    response = await post("/v1/xml/sign?key=nobody", data=FORM, headers=headers)
    assert response.status == 404 and (await response.json())["code"] == "not_found"
    response = await post("/v1/xml/sign?level=B-X", data=FORM, headers=headers)
    assert response.status == 400 and (await response.json())["code"] == "bad_parameter"
    response = await post("/v1/xml/sign?profile=no-such-form", data=FORM, headers=headers)
    assert response.status == 404
    response = await post("/v1/xml/sign?level=B-B", data=FORM, headers=headers)
    signed = await response.read()
    response = await post("/v1/xml/sign?level=B-B", data=signed, headers=headers)
    assert response.status == 422 and (await response.json())["code"] == "already_signed"


async def test_tsa_down_is_never_a_lower_level(
    api_factory: Callable[..., Awaitable[Api]],
    sandbox_services: SandboxPKI,
    dead_tsa: Callable[..., Awaitable[DeadTsa]],
) -> None:
    dead = await dead_tsa("drop")
    settings = Settings(trust=TrustSettings(tsa=(TsaSettings(url=dead.url, attempts=1),)))
    api = await api_factory(settings, sandbox_pki=sandbox_services)
    headers = {**api.auth("signer"), **XML}
    for level in ("B-T", "B-LT", "B-LTA"):
        response = await api.client.post(f"/v1/xml/sign?level={level}", data=FORM, headers=headers)
        assert response.status in (503, 504), await response.text()
        body = await response.json()
        assert body["code"] in ("upstream_unavailable", "upstream_timeout")
        if response.status == 503:
            assert int(response.headers["Retry-After"]) >= 1
    assert dead.accepted >= 1
    response = await api.client.post("/v1/xml/sign?level=B-B", data=FORM, headers=headers)
    assert response.status == 200


async def test_drafting_goes_to_the_configured_workers(
    api_factory: Callable[..., Awaitable[Api]], sandbox_services: SandboxPKI, fee_note_pdf: bytes
) -> None:
    """``[signing] xml_workers``: N worker processes draft (the XML sign route and the
    form recipe both use them); 0 drafts in a thread of the daemon. Same output."""
    signed: dict[int, bytes] = {}
    for count in (2, 0):
        api = await api_factory(
            Settings(signing=SigningSettings(xml_workers=count)), sandbox_pki=sandbox_services
        )
        app = api.client.app
        drafted: list[object] = []
        if count:
            drafting = app[SERVICES].xml_workers
            workers = await drafting.started()  # started in the background
            assert workers is drafting.pool and workers is not None
            assert workers.workers == count
            real = workers.run

            async def recording(fn, *args, _real=real, _seen=drafted, **kwargs):  # type: ignore[no-untyped-def]
                _seen.append(fn)
                return await _real(fn, *args, **kwargs)

            workers.run = recording  # type: ignore[method-assign]
        else:
            assert app[SERVICES].xml_workers.pool is None
        headers = {**api.auth("signer"), **XML}
        response = await api.client.post("/v1/xml/sign?level=B-T", data=FORM, headers=headers)
        assert response.status == 200, await response.text()
        signed[count] = await response.read()
        form = aiohttp.FormData()
        form.add_field("xml", FEE_NOTE_XML, filename="f.xml", content_type="application/xml")
        form.add_field("pdf", fee_note_pdf, filename="f.pdf", content_type="application/pdf")
        response = await api.client.post(
            "/v1/forms/fee-note/sign", data=form, headers=api.auth("signer")
        )
        assert response.status == 200, await response.text()
        assert drafted == ([draft_signature] * 2 if count else [])
        done = xmlsec1_verify(signed[count], sandbox_services.roots_pem)
        assert done.returncode == 0, done.stderr
    # Same document, same signer: only the values that change per signature differ.
    assert len(signed[2]) - len(signed[0]) in range(-16, 17)


def test_a_negative_worker_count_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "sidecar.toml"
    config.write_text("[signing]\nxml_workers = -1\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert "signing.xml_workers" in str(caught.value)
    assert "0 or more" in str(caught.value)


async def test_drafts_and_pdf_steps_share_one_pool(
    api_factory: Callable[..., Awaitable[Api]], sandbox_services: SandboxPKI, fee_note_pdf: bytes
) -> None:
    """The XAdES drafts run on the PDF workers' processes (one pool, two kinds of step),
    grown to ``xml_workers``: form recipes at once never hold more processes than that."""
    settings = Settings(signing=SigningSettings(xml_workers=2, pdf_workers=1))
    api = await api_factory(settings, sandbox_pki=sandbox_services)
    app = api.client.app
    services = app[SERVICES]
    drafts = await services.xml_workers.started()
    shared = services.pades.inspector.workers
    assert isinstance(drafts, PoolKind) and drafts.shared is shared and shared.workers == 2

    async def recipe() -> int:
        form = aiohttp.FormData()
        form.add_field("xml", FEE_NOTE_XML, filename="f.xml", content_type="application/xml")
        form.add_field("pdf", fee_note_pdf, filename="f.pdf", content_type="application/pdf")
        response = await api.client.post(
            "/v1/forms/fee-note/sign", data=form, headers=api.auth("signer")
        )
        await response.read()
        return response.status

    assert await asyncio.gather(*(recipe() for _ in range(4))) == [200] * 4
    assert 1 <= len(shared.pids()) <= 2 and drafts.pids() == shared.pids()
