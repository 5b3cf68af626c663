"""The doctor's TSA probe judges a reply with the daemon's own check (``check_reply``):
a TSA whose tokens the daemon refuses is not reported fine.

The TSA is certomancer's sandbox TSA; the faulty one is a real HTTP relay on loopback
that hands on the sandbox TSA's reply with one byte of the token's signature changed
(what a broken TSA or a meddling proxy does; no real TSA can be asked to).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from asn1crypto import tsp

from sidecar.config import Settings, TrustSettings, TsaSettings
from sidecar.doctor import DoctorContext, DoctorReport, Finding, run_doctor
from sidecar.doctor.checks import check_sandbox
from sidecar.doctor.subsystems import check_tsas
from sidecar.paths import Paths
from sidecar.sandbox.pki import SandboxPKI


def flip_signature_byte(reply: bytes) -> bytes:
    """The reply with the last byte of its token's CMS signature changed, nothing else."""
    token = tsp.TimeStampResp.load(reply)["time_stamp_token"]
    signature = bytes(token["content"]["signer_infos"][0]["signature"].contents)
    at = reply.rindex(signature) + len(signature) - 1
    return reply[:at] + bytes([reply[at] ^ 0x01]) + reply[at + 1 :]


@asynccontextmanager
async def relay(tsa_url: str, alter: Callable[[bytes], bytes]) -> AsyncIterator[str]:
    """An HTTP TSA on loopback (a free port) answering with *alter* of the real TSA's reply."""

    async def stamp(request: web.Request) -> web.Response:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                tsa_url,
                data=await request.read(),
                headers={"Content-Type": "application/timestamp-query"},
            ) as answer,
        ):
            reply = await answer.read()
        return web.Response(body=alter(reply), content_type="application/timestamp-reply")

    app = web.Application()
    app.router.add_post("/tsa", stamp)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/tsa"
    finally:
        await runner.cleanup()


async def report_of(ctx_kwargs: dict, checks: list) -> dict[str, Finding]:
    async with aiohttp.ClientSession() as session:
        report: DoctorReport = await run_doctor(
            DoctorContext(session=session, **ctx_kwargs), checks
        )
    return {f.check: f for f in report.findings}


def home(tmp_path: Path) -> Paths:
    directory = tmp_path / "home"
    directory.mkdir(mode=0o700, parents=True)
    return Paths(config_dir=directory, data_dir=directory, log_dir=directory / "logs")


@pytest.mark.parametrize("tampered", [False, True], ids=["as-sent", "signature-changed"])
async def test_sandbox_tsa_whose_token_the_daemon_refuses_is_not_ok(
    tmp_path: Path, sandbox_services: SandboxPKI, tampered: bool
) -> None:
    alter = flip_signature_byte if tampered else (lambda reply: reply)
    async with relay(sandbox_services.tsa_url, alter) as url:
        found = await report_of(
            {
                "paths": home(tmp_path),
                "settings": Settings(),
                "sandbox": True,
                "_sandbox_pki": dataclasses.replace(sandbox_services, tsa_url=url),
                "timeout": 10.0,
            },
            [("sandbox", check_sandbox)],
        )
    tsa = found["tsa:sandbox"]
    if not tampered:  # the relay itself is no fault: the same path, untouched, is fine
        assert tsa.status == "ok", tsa
        return
    assert tsa.status == "fail", tsa
    assert "the token's CMS signature does not verify" in tsa.summary
    assert "clock" not in found  # no skew is measured from a token not to be trusted


async def test_configured_tsa_not_chaining_to_an_anchor_is_not_ok(
    tmp_path: Path, sandbox_services: SandboxPKI, make_sandbox_pki: Callable[..., SandboxPKI]
) -> None:
    # The daemon refuses every token of a TSA that chains to none of its anchors; the
    # doctor said "timestamp granted" all the same before it used the daemon's check.
    tsa = (TsaSettings(url=sandbox_services.tsa_url),)
    # Anchored on another PKI's roots: the TSA answers, its chain ends elsewhere.
    untrusted = TrustSettings(tsa=tsa, anchors=(make_sandbox_pki().roots_pem,))
    trusted = TrustSettings(tsa=tsa, anchors=(sandbox_services.roots_pem,))
    seen: dict[str, Finding] = {}
    for trust, status in ((untrusted, "fail"), (trusted, "ok")):
        found = await report_of(
            {
                "paths": home(tmp_path / status),
                "settings": dataclasses.replace(Settings(), trust=trust),
                "sandbox": False,
            },
            [("tsa", check_tsas)],
        )
        seen[status] = found["tsa:127.0.0.1"]
        assert seen[status].status == status, seen[status]
    assert "does not chain to a configured trust anchor" in seen["fail"].summary
    assert "[trust] anchors" in seen["fail"].fix
