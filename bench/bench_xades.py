"""XAdES signing throughput: B-B and B-LT, in process and through HTTP, vs raw signxml.

    .venv/bin/python bench/bench_xades.py [--seconds 5] [--size 20000]

Everything runs on loopback in this one process: the sandbox PKI (OCSP/CRL), a fast
TSA (pyHanko's DummyTimeStamper with the sandbox TSA's key loaded once: certomancer's
own TSA reloads its key per request, ~50 ms of CPU), and the daemon (the real app,
real guards and token, real trust layer with its revocation cache). Printed per case:
n, p50, p95 (ms) and forms/s, next to the same-run baselines: raw signxml (the B-B
core alone, in memory) and the TSA round trip alone (the TSA's share of B-T and up).
The HTTP client shares the daemon's event loop, so HTTP figures are pessimistic.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from asn1crypto import cms, core, pem, tsp
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.serialization import pkcs12
from lxml import etree
from pyhanko.sign.general import as_signing_certificate, simple_cms_attribute
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
from signxml import SignatureConstructionMethod
from signxml.xades import XAdESSigner

from sidecar.api.app import create_app
from sidecar.clients import ClientStore, Scope
from sidecar.config import Settings, TrustSettings, TsaSettings
from sidecar.keys import KeyConfig, create_signer
from sidecar.paths import Paths
from sidecar.sandbox import ensure_sandbox_pki, serve_sandbox_pki
from sidecar.signing.report import Level
from sidecar.signing.trust_binding import TrustTimestampSource, TrustValidationDataSource
from sidecar.signing.xades import sign_xml
from sidecar.trust import open_trust

C14N_1_0 = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"


def make_form(size: int) -> bytes:
    """A fee-note-like document of about ``size`` bytes."""
    head = b'<?xml version="1.0" encoding="UTF-8"?>\n<FeeNote xmlns="urn:bench:fee-note">\n'
    line = b'  <Act code="C1" date="2026-01-15"><Amount currency="EUR">42.00</Amount></Act>\n'
    body = line * max(1, (size - len(head)) // len(line))
    return head + body + b"</FeeNote>\n"


def _load_pem(path: Path) -> bytes:
    return pem.unarmor(path.read_bytes())[2]


class _FastTimeStamper(DummyTimeStamper):
    """pyHanko's test TSA with its key parsed once (its own re-parses it per token)."""

    def __init__(self, *, tsa_cert: asn1_x509.Certificate, tsa_key: asn1_keys.PrivateKeyInfo):
        super().__init__(tsa_cert=tsa_cert, tsa_key=tsa_key)
        self._key = serialization.load_der_private_key(tsa_key.dump(), password=None)

    def _sign_tst_info(self, tst_info_data, md_algorithm, dt):  # type: ignore[no-untyped-def]
        digest = hashlib.new(md_algorithm, tst_info_data).digest()
        attrs = cms.CMSAttributes(
            [
                simple_cms_attribute("content_type", "tst_info"),
                simple_cms_attribute("signing_time", cms.Time({"utc_time": core.UTCTime(dt)})),
                simple_cms_attribute("signing_certificate", as_signing_certificate(self.tsa_cert)),
                simple_cms_attribute("message_digest", digest),
            ]
        )
        algorithm = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384()}[md_algorithm]
        return self._key.sign(attrs.dump(), PKCS1v15(), algorithm), attrs


async def start_fast_tsa(pki_dir: Path) -> tuple[str, web.AppRunner]:
    cert = asn1_x509.Certificate.load(_load_pem(pki_dir / "certs" / "tsa.pem"))
    key = asn1_keys.PrivateKeyInfo.load(_load_pem(pki_dir / "keys" / "tsa.key.pem"))
    stamper = _FastTimeStamper(tsa_cert=cert, tsa_key=key)

    async def handle(request: web.Request) -> web.Response:
        req = tsp.TimeStampReq.load(await request.read())
        resp = await stamper.async_request_tsa_response(req)
        return web.Response(body=resp.dump(), content_type="application/timestamp-reply")

    app = web.Application()
    app.router.add_post("/tsa", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return f"http://127.0.0.1:{port}/tsa", runner


async def measure(
    name: str, call: Callable[[], Awaitable[object]], seconds: float, concurrency: int = 1
) -> dict[str, float | str]:
    for _ in range(3):
        await call()  # warm caches (revocation data, connections)
    times: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await call()
            times.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    times.sort()
    return {
        "case": name,
        "n": len(times),
        "p50": statistics.median(times) * 1000,
        "p95": times[int(0.95 * (len(times) - 1))] * 1000,
        "per_s": len(times) / elapsed,
    }


async def main(seconds: float, size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        pki = ensure_sandbox_pki(home / "pki", port=_free_port())
        form = make_form(size)
        async with serve_sandbox_pki(pki):
            tsa_url, tsa_runner = await start_fast_tsa(pki.directory)
            results = await _run(home, pki, tsa_url, form, seconds)
            await tsa_runner.cleanup()
    print(f"\nXAdES bench: {len(form)} byte form, {seconds:.0f} s per case\n")
    print(f"{'case':<44}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'forms/s':>10}")
    for row in results:
        print(
            f"{row['case']:<44}{row['n']:>6}{row['p50']:>10.2f}{row['p95']:>10.2f}"
            f"{row['per_s']:>10.1f}"
        )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _run(
    home: Path, pki, tsa_url: str, form: bytes, seconds: float
) -> list[dict[str, float | str]]:  # type: ignore[no-untyped-def]
    signer_files = pki.signers["sandbox-rsa"]
    signer = create_signer(
        KeyConfig(
            id="bench",
            backend="pkcs12",
            path=signer_files.p12,
            passphrase_source="config",
            passphrase=signer_files.p12_passphrase,
        )
    )
    signer.open()
    results: list[dict[str, float | str]] = []

    # Baseline 1: raw signxml XAdES B-B with the key in memory.
    key, cert, extra = pkcs12.load_key_and_certificates(
        signer_files.p12.read_bytes(), signer_files.p12_passphrase.encode()
    )
    chain = [cert, *(extra or [])]

    def raw_signxml() -> bytes:
        xml_signer = XAdESSigner(
            method=SignatureConstructionMethod.enveloped,
            signature_algorithm="rsa-sha256",
            c14n_algorithm=C14N_1_0,
        )
        root = xml_signer.sign(
            etree.fromstring(form), key=key, cert=chain, always_add_key_value=False
        )
        return etree.tostring(root)

    loop = asyncio.get_running_loop()
    results.append(
        await measure(
            "baseline: raw signxml B-B (executor)",
            lambda: loop.run_in_executor(None, raw_signxml),
            seconds,
        )
    )

    settings = Settings(trust=TrustSettings(bundled_anchors=False, tsa=(TsaSettings(url=tsa_url),)))
    async with (
        aiohttp.ClientSession() as session,
        open_trust(
            settings.trust,
            session=session,
            data_dir=home,
            extra_anchor_files=[pki.roots_pem],
        ) as trust,
    ):
        timestamps = TrustTimestampSource(trust.tsa)
        validation = TrustValidationDataSource(trust.revocation)
        results.append(
            await measure(
                "baseline: TSA round trip (checked)", lambda: timestamps.timestamp(form), seconds
            )
        )
        for level in (Level.B_B, Level.B_LT):
            for concurrency in (1, 16):
                results.append(
                    await measure(
                        f"engine {level.value} in process, c={concurrency}",
                        lambda level=level: sign_xml(
                            form, signer, level, timestamps=timestamps, validation_data=validation
                        ),
                        seconds,
                        concurrency,
                    )
                )

    # Through HTTP: the real app (guards, token, keys and trust subsystems).
    paths = Paths(config_dir=home / "d", data_dir=home / "d", log_dir=home / "d" / "logs")
    paths.ensure()
    store = ClientStore(paths.clients_file)
    token = store.create("bench", frozenset({Scope.SIGN}))
    app = create_app(settings, paths, client_store=store, sandbox_pki=pki)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/xml"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as client:
        for level in ("B-B", "B-LT"):

            async def post(level: str = level) -> None:
                async with client.post(
                    f"http://127.0.0.1:{port}/v1/xml/sign?level={level}&key=sandbox-rsa",
                    data=form,
                    headers=headers,
                ) as response:
                    assert response.status == 200, await response.text()
                    await response.read()

            for concurrency in (1, 16):
                results.append(
                    await measure(f"HTTP {level}, c={concurrency}", post, seconds, concurrency)
                )
    await runner.cleanup()
    signer.close()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.size))
