"""Revocation lookups for one chain: the shared cache vs pyHanko's fetchers without it.

Baseline (same run): a fresh ValidationContext per signature on pyhanko-certvalidator's
aiohttp fetcher backend, as pyHanko does by default — every signature asks the OCSP
responder again. Ours: RevocationService.revocation_info through the cache. Prints
median, p95 and throughput for sequential calls and for a concurrent burst, each phase
starting with a cold cache, and the OCSP requests each made (counted at the responder).

    .venv/bin/python bench/bench_revocation.py [N]
"""

from __future__ import annotations

import asyncio
import collections
import sys
import tempfile
from pathlib import Path

import aiohttp
from aiohttp import web
from certomancer.integrations.aiohttp_animator import build_animator_app
from certomancer.registry import ArchLabel
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend
from stats import free_port, summarize, timed

from sidecar.sandbox import ensure_sandbox_pki, load_certomancer_config
from sidecar.sandbox.pki import ARCH_LABEL
from sidecar.trust import RevocationCache, RevocationService, TrustAnchors, load_certificates
from sidecar.trust.revocation import REQUIRE_REVINFO


def report(name: str, samples: list[float], wall: float, ocsp: int) -> None:
    print(summarize(samples, wall).line(name, 34, f"  OCSP requests {ocsp}"))


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pki = await asyncio.to_thread(ensure_sandbox_pki, Path(tmp) / "pki", port=free_port())
        arch = await asyncio.to_thread(load_certomancer_config, pki)
        app = build_animator_app({ArchLabel(ARCH_LABEL): arch}, with_web_ui=False)
        counts: collections.Counter[str] = collections.Counter()

        @web.middleware
        async def count(request: web.Request, handler):  # type: ignore[no-untyped-def]
            counts[request.path.split("/")[2]] += 1
            return await handler(request)

        app.middlewares.append(count)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, pki.host, pki.port).start()
        signer = pki.signers["sandbox-rsa"]
        chain = [*load_certificates(signer.cert_pem), *load_certificates(signer.chain_pem)]
        anchors = TrustAnchors.load([pki.roots_pem])
        try:
            async with aiohttp.ClientSession() as session:
                backend = AIOHttpFetcherBackend(session)

                async def baseline_once() -> None:
                    context = ValidationContext(
                        trust_roots=list(anchors.certificates),
                        other_certs=chain[1:],
                        allow_fetching=True,
                        fetcher_backend=backend,
                        revinfo_policy=REQUIRE_REVINFO,
                    )
                    await CertificateValidator(
                        chain[0], intermediate_certs=chain[1:], validation_context=context
                    ).async_validate_path()

                services: list[RevocationService] = []

                async def ours_once() -> None:
                    await services[-1].revocation_info(chain)

                for name, once in (
                    ("baseline (no cache)", baseline_once),
                    ("sidecar cache", ours_once),
                ):
                    services.append(RevocationService(session, anchors, RevocationCache(None)))
                    counts.clear()
                    samples, wall = await timed(once, n=n)
                    report(f"{name}, sequential", samples, wall, counts["ocsp"])

                    services.append(RevocationService(session, anchors, RevocationCache(None)))
                    counts.clear()
                    samples, wall = await timed(once, n=n, concurrency=n)
                    report(f"{name}, burst of {n}", samples, wall, counts["ocsp"])
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
