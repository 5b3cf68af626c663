"""Batch signing throughput: 100 fee notes in one ``POST /v1/batches`` vs one request each.

    .venv/bin/python bench/bench_batch.py [--documents 100] [--rounds 3] [--concurrency 4]

Everything on loopback, as in ``bench_pades.py``: the sandbox PKI (OCSP/CRL) in this
process, a fast TSA (``fast_tsa.py``) in a child process, the real app with its guards,
trust layer and caches. The key is the sandbox RSA signer (PKCS#12): the key's own cost
is the same on both paths, so the figures compare the paths, not the token.

Printed: per document p50/p95 of the one-request-at-a-time baseline (the same fee notes
with their PDF through ``POST /v1/forms/fee-note/sign``, one after the other, as a
practice program loops today), then that baseline at the batch's concurrency (several
requests in flight), then the batch: documents/s from ``POST`` to the last document
signed (polling ``GET /v1/batches/{id}`` every 50 ms), per round.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from fast_tsa import running_fast_tsa
from stats import free_port, summarize, timed

from sidecar.api.app import create_app
from sidecar.clients import ClientStore, Scope
from sidecar.config import Settings, SigningSettings, TrustSettings, TsaSettings
from sidecar.paths import Paths
from sidecar.sandbox import ensure_sandbox_pki, serve_sandbox_pki
from sidecar.signing.profiles import BUNDLED_PROFILE_DIR

SAMPLES = BUNDLED_PROFILE_DIR / "samples"


async def main(documents: int, rounds: int, concurrency: int) -> None:
    fee_xml = (SAMPLES / "fee-note.xml").read_bytes()
    fee_pdf = (SAMPLES / "fee-note.pdf").read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pki = ensure_sandbox_pki(root / "pki", port=free_port())
        async with serve_sandbox_pki(pki):
            with running_fast_tsa(pki.directory) as tsa:
                paths = Paths(
                    config_dir=root / "home", data_dir=root / "home", log_dir=root / "home"
                )
                paths.ensure()
                store = ClientStore(paths.clients_file)
                token = store.create("bench", frozenset(Scope))
                settings = Settings(
                    trust=TrustSettings(tsa=(TsaSettings(url=tsa.url),)),
                    signing=SigningSettings(batch_concurrency=concurrency),
                )
                app = create_app(settings, paths, client_store=store, sandbox_pki=pki)
                runner = web.AppRunner(app, access_log=None)
                await runner.setup()
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                port = runner.addresses[0][1]
                try:
                    await _compare(
                        f"http://127.0.0.1:{port}",
                        {"Authorization": f"Bearer {token}"},
                        fee_xml,
                        fee_pdf,
                        documents=documents,
                        rounds=rounds,
                        concurrency=concurrency,
                    )
                finally:
                    await runner.cleanup()


async def _compare(
    base: str,
    auth: dict[str, str],
    fee_xml: bytes,
    fee_pdf: bytes,
    *,
    documents: int,
    rounds: int,
    concurrency: int,
) -> None:
    key = "?key=sandbox-rsa"
    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(base, headers=auth, timeout=timeout) as client:

        async def one_request() -> None:
            form = aiohttp.FormData()
            form.add_field("xml", fee_xml, content_type="application/xml")
            form.add_field("pdf", fee_pdf, content_type="application/pdf")
            async with client.post(f"/v1/forms/fee-note/sign{key}", data=form) as response:
                assert response.status == 200, await response.text()
                await response.read()

        # Warm-up: revocation cache, TSA path, workers, connection.
        await timed(one_request, n=3)
        print(f"{documents} fee notes (XML + {len(fee_pdf)}-byte PDF), {rounds} round(s)")
        samples, wall = await timed(one_request, n=documents)
        single = summarize(samples, wall)
        print(single.line("one request at a time (c=1)", extra="  <- baseline"))
        samples, wall = await timed(one_request, n=documents, concurrency=concurrency)
        print(summarize(samples, wall).line(f"one request each, c={concurrency}"))

        entry = {
            "kind": "form",
            "profile": "fee-note",
            "xml": base64.b64encode(fee_xml).decode(),
            "pdf": base64.b64encode(fee_pdf).decode(),
        }
        body = {"documents": [dict(entry, name=f"note-{n}") for n in range(documents)]}
        rates = []
        for _ in range(rounds):
            begin = time.perf_counter()
            async with client.post(f"/v1/batches{key}", json=body) as response:
                assert response.status == 202, await response.text()
                location = response.headers["Location"]
            while True:
                async with client.get(location) as response:
                    summary = await response.json()
                if summary["state"] != "running":
                    break
                await asyncio.sleep(0.05)
            wall = time.perf_counter() - begin
            assert summary["signed"] == documents, summary
            rates.append(documents / wall)
            print(
                f"{'batch, one POST':<40} n={documents:<6} {wall:8.2f} s       {rates[-1]:9.1f}/s"
            )
        median = statistics.median(rates)
        print(
            f"batch throughput (median of {rounds}): {median:.1f} documents/s, "
            f"x{median / single.per_second:.2f} the one-at-a-time baseline"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main(args.documents, args.rounds, args.concurrency))
