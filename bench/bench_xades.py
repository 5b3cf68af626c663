"""XAdES signing throughput: B-B and B-LT, in process and through HTTP, vs raw signxml.

    .venv/bin/python bench/bench_xades.py [--seconds 5] [--size 20000] [--workers N]

Everything runs on this machine, on loopback: the sandbox PKI (OCSP/CRL) and the
daemon (the real app, real guards and token, real trust layer with its caches, its
XAdES drafting workers) in this process and its workers; a fast TSA (bench/fast_tsa.py:
the sandbox TSA's key loaded once, about 0.7 ms of CPU a reply — certomancer's own TSA
reloads its key per request, ~50 ms of CPU) in a child process, as a real TSA is
elsewhere. The HTTP client is this process too, on the daemon's event loop: HTTP
figures carry the client's cost, and everything shares the machine's cores.

Printed per case: n, p50, p95 (ms), forms/s, and CPU per form in ms — this process
(all its threads: the daemon's loop, the key, the client), the drafting workers, and
the TSA — next to the same-run baselines: raw signxml (the B-B core alone, in memory,
in a thread) and the TSA round trip alone, raw (HTTP only) and checked (our client:
nonce, imprint, CMS signature, TSA path...) — the TSA's share of B-T and up. The
engine cases call :func:`sidecar.signing.xades.sign_xml` with a worker pool as the
daemon does; "threads" rows draft in a thread instead (``[signing] xml_workers = 0``).
Last, the peer a Python integrator would write instead of calling the daemon
(bench/peers.py), in one long-running process: signxml's XAdESSigner at B-B, and at
B-LT the same plus pyHanko's HTTPTimeStamper and certvalidator's OCSP/CRL (what that
peer does not do is printed), with our ratio to it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.serialization import pkcs12
from fast_tsa import running_fast_tsa
from lxml import etree
from peers import DESCRIPTIONS, run_peer
from signxml import SignatureConstructionMethod
from signxml.xades import XAdESSigner
from stats import cpu_seconds, free_port, summarize, timed

from sidecar.api.app import create_app
from sidecar.api.appkeys import SERVICES
from sidecar.clients import ClientStore, Scope
from sidecar.config import Settings, SigningSettings, TrustSettings, TsaSettings
from sidecar.keys import KeyConfig, create_signer
from sidecar.paths import Paths
from sidecar.sandbox import ensure_sandbox_pki, serve_sandbox_pki
from sidecar.signing.report import Level
from sidecar.signing.trust_binding import TrustTimestampSource, TrustValidationDataSource
from sidecar.signing.workers import WorkerPool
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


@dataclass(frozen=True)
class Processes:
    """Whose CPU time a case is charged: the drafting workers' and the TSA's processes."""

    tsa: int
    workers: Callable[[], list[int]] = list


def _worker_pids(pool: WorkerPool | None) -> list[int]:
    return pool.pids() if pool is not None else []


@dataclass(frozen=True)
class Row:
    case: str
    n: int
    p50: float
    p95: float
    per_s: float
    cpu_here: float
    cpu_workers: float
    cpu_tsa: float


async def measure(
    name: str,
    call: Callable[[], Awaitable[object]],
    seconds: float,
    processes: Processes,
    concurrency: int = 1,
) -> Row:
    for _ in range(3):
        await call()  # warm caches (revocation data, connections, workers)
    workers = processes.workers()
    cpu_here = time.process_time()
    cpu_workers = cpu_seconds(workers)
    cpu_tsa = cpu_seconds([processes.tsa])
    times, elapsed = await timed(call, seconds=seconds, concurrency=concurrency)
    summary = summarize(times, elapsed)
    per_form = 1000 / summary.n
    return Row(
        case=name,
        n=summary.n,
        p50=summary.p50_ms,
        p95=summary.p95_ms,
        per_s=summary.per_second,
        cpu_here=(time.process_time() - cpu_here) * per_form,
        cpu_workers=(cpu_seconds(workers) - cpu_workers) * per_form,
        cpu_tsa=(cpu_seconds([processes.tsa]) - cpu_tsa) * per_form,
    )


async def main(seconds: float, size: int, workers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        pki = ensure_sandbox_pki(home / "pki", port=free_port())
        form = make_form(size)
        async with serve_sandbox_pki(pki):
            with running_fast_tsa(pki.directory) as tsa:
                rows = await _run(home, pki, tsa.url, Processes(tsa.pid), form, seconds, workers)
                peers = {
                    level: await run_peer(
                        "xades",
                        level,
                        seconds,
                        pki.signers["sandbox-rsa"],
                        form,
                        tsa_url=tsa.url,
                        roots=pki.roots_pem,
                    )
                    for level in ("B-B", "B-LT")
                }
    print(
        f"\nXAdES bench: {len(form)} byte form, {seconds:g} s per case, "
        f"{workers} drafting worker(s), {os.cpu_count()} CPU core(s)\n"
    )
    print(
        f"{'case':<40}{'n':>6}{'p50 ms':>9}{'p95 ms':>9}{'forms/s':>9}"
        f"{'CPU ms/form: here':>19}{'workers':>9}{'TSA':>7}"
    )
    for row in rows:
        print(
            f"{row.case:<40}{row.n:>6}{row.p50:>9.2f}{row.p95:>9.2f}{row.per_s:>9.1f}"
            f"{row.cpu_here:>19.2f}{row.cpu_workers:>9.2f}{row.cpu_tsa:>7.2f}"
        )
    by_case = {row.case: row for row in rows}
    raw = by_case["baseline: TSA round trip (raw HTTP)"].p50
    checked = by_case["baseline: TSA round trip (checked)"].p50
    print("\nB-LT p50 over the TSA round trip (raw HTTP / checked):")
    for name, row in by_case.items():
        if "B-LT" in name:
            print(f"  {name:<40}{row.p50 - raw:>+8.2f} ms  {row.p50 - checked:>+8.2f} ms")
    print("\npeer: what an integrator writes instead, one long-running process (bench/peers.py);")
    print("x: the peer's p50 over ours (same TSA, same OCSP/CRL)")
    for level, samples in peers.items():
        peer = summarize(samples)
        print(f"  {level}: {DESCRIPTIONS['xades', level]}")
        print(peer.line(f"  peer {level}", 40))
        for name in (f"engine {level}, c=1", f"HTTP {level}, c=1"):
            if name in by_case:
                ours = by_case[name].p50
                print(f"    {name:<24} p50 {ours:7.2f} ms vs {peer.p50_ms:7.2f} ms: "
                      f"x{peer.p50_ms / ours:.1f}")  # fmt: skip


async def _run(
    home: Path,
    pki,  # type: ignore[no-untyped-def]
    tsa_url: str,
    processes: Processes,
    form: bytes,
    seconds: float,
    workers: int,
) -> list[Row]:
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
    rows: list[Row] = []

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
    rows.append(
        await measure(
            "baseline: raw signxml B-B (thread)",
            lambda: loop.run_in_executor(None, raw_signxml),
            seconds,
            processes,
        )
    )

    settings = Settings(
        trust=TrustSettings(bundled_anchors=False, tsa=(TsaSettings(url=tsa_url),)),
        signing=SigningSettings(xml_workers=workers),
    )
    pool = WorkerPool("bench", workers=workers) if workers else None
    if pool is not None:
        await pool.start()
    with_pool = Processes(processes.tsa, lambda: _worker_pids(pool))
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

        rows.append(
            await measure("baseline: TSA round trip (raw HTTP)", raw_tsa, seconds, processes)
        )
        rows.append(
            await measure(
                "baseline: TSA round trip (checked)",
                lambda: timestamps.timestamp(form),
                seconds,
                processes,
            )
        )
        cases = [("engine", pool)] + ([("engine, threads", None)] if pool else [])
        for level in (Level.B_B, Level.B_LT):
            for label, drafting in cases:
                for concurrency in (1, 16):
                    rows.append(
                        await measure(
                            f"{label} {level.value}, c={concurrency}",
                            lambda level=level, drafting=drafting: sign_xml(
                                form,
                                signer,
                                level,
                                timestamps=timestamps,
                                validation_data=validation,
                                workers=drafting,
                            ),
                            seconds,
                            with_pool,
                            concurrency,
                        )
                    )
    if pool is not None:
        pool.close()

    # Through HTTP: the real app (guards, token, keys, trust and XAdES subsystems).
    paths = Paths(config_dir=home / "d", data_dir=home / "d", log_dir=home / "d" / "logs")
    paths.ensure()
    store = ClientStore(paths.clients_file)
    token = store.create("bench", frozenset({Scope.SIGN}))
    app = create_app(settings, paths, client_store=store, sandbox_pki=pki)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await app[SERVICES].xml_workers.started()  # they start in the background
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    daemon = Processes(processes.tsa, lambda: _worker_pids(app[SERVICES].xml_workers.pool))
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
                rows.append(
                    await measure(
                        f"HTTP {level}, c={concurrency}", post, seconds, daemon, concurrency
                    )
                )
    await runner.cleanup()
    signer.close()
    return rows


def _default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 2) - 1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument(
        "--workers",
        type=int,
        default=_default_workers(),
        help="drafting worker processes (0: threads); default as the daemon's",
    )
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.size, args.workers))
