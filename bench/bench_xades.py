"""XAdES signing throughput: B-B and B-LT, in process and through HTTP, vs raw signxml.

    .venv/bin/python bench/bench_xades.py [--seconds 5] [--size 20000]

Everything runs on loopback: the sandbox PKI (OCSP/CRL) and the daemon (the real app,
real guards and token, real trust layer with its caches) in this process; a fast TSA
(bench/fast_tsa.py: the sandbox TSA's key loaded once — certomancer's own TSA reloads
it per request, ~50 ms of CPU) in a child process, as a real TSA is elsewhere. Printed
per case: n, p50, p95 (ms), forms/s and this process's CPU time per form (all its
threads; the TSA child's excluded; for HTTP cases it includes the benchmark's own
client), next to the same-run baselines: raw signxml
(the B-B core alone, in memory) and the TSA round trip alone, raw (HTTP only) and
checked (our client: nonce, imprint, CMS signature, TSA path...) — the TSA's share
of B-T and up. The HTTP client shares the daemon's event loop, so HTTP figures are
pessimistic.
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
from cryptography.hazmat.primitives.serialization import pkcs12
from fast_tsa import running_fast_tsa
from lxml import etree
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
from sidecar.trust.tsa import make_request

C14N_1_0 = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"


def make_form(size: int) -> bytes:
    """A fee-note-like document of about ``size`` bytes."""
    head = b'<?xml version="1.0" encoding="UTF-8"?>\n<FeeNote xmlns="urn:bench:fee-note">\n'
    line = b'  <Act code="C1" date="2026-01-15"><Amount currency="EUR">42.00</Amount></Act>\n'
    body = line * max(1, (size - len(head)) // len(line))
    return head + body + b"</FeeNote>\n"


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
    cpu_started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    times.sort()
    return {
        "case": name,
        "n": len(times),
        "p50": statistics.median(times) * 1000,
        "p95": times[int(0.95 * (len(times) - 1))] * 1000,
        "per_s": len(times) / elapsed,
        "cpu": cpu / len(times) * 1000,
    }


async def main(seconds: float, size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        pki = ensure_sandbox_pki(home / "pki", port=_free_port())
        form = make_form(size)
        async with serve_sandbox_pki(pki):
            with running_fast_tsa(pki.directory) as tsa_url:
                results = await _run(home, pki, tsa_url, form, seconds)
    print(f"\nXAdES bench: {len(form)} byte form, {seconds:.0f} s per case\n")
    print(f"{'case':<44}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'forms/s':>10}{'CPU ms':>10}")
    for row in results:
        print(
            f"{row['case']:<44}{row['n']:>6}{row['p50']:>10.2f}{row['p95']:>10.2f}"
            f"{row['per_s']:>10.1f}{row['cpu']:>10.2f}"
        )
    by_case = {str(row["case"]): row for row in results}
    raw = float(by_case["baseline: TSA round trip (raw HTTP)"]["p50"])
    checked = float(by_case["baseline: TSA round trip (checked)"]["p50"])
    print("\nB-LT p50 over the TSA round trip (raw HTTP / checked):")
    for name, row in by_case.items():
        if "B-LT" in name:
            p50 = float(row["p50"])
            print(f"  {name:<42}{p50 - raw:>+8.2f} ms  {p50 - checked:>+8.2f} ms")


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
        query = make_request(hashlib.sha256(form).digest(), "sha256").dump()

        async def raw_tsa() -> None:
            async with session.post(
                tsa_url, data=query, headers={"Content-Type": "application/timestamp-query"}
            ) as response:
                await response.read()

        results.append(await measure("baseline: TSA round trip (raw HTTP)", raw_tsa, seconds))
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
