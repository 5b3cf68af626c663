"""Timestamps from the sandbox TSA: our checked client vs pyHanko's HTTPTimeStamper.

Baseline (same run, same TSA, same session): pyHanko's HTTPTimeStamper, which checks
status and nonce only. Ours adds imprint, CMS signature, chain, EKU and clock checks;
the difference of the medians is what those checks cost. certomancer's TSA spends
~50 ms per request reloading its key, so both include that.

    .venv/bin/python bench/bench_timestamps.py [N]
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import tempfile
from pathlib import Path

import aiohttp
from pyhanko.sign.timestamps import HTTPTimeStamper
from stats import free_port, summarize, timed

from sidecar.sandbox import ensure_sandbox_pki, serve_sandbox_pki
from sidecar.trust import TimeStampClient, TrustAnchors, TsaEndpoint


def report(name: str, samples: list[float], wall: float) -> None:
    print(summarize(samples, wall).line(name, 34))


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pki = await asyncio.to_thread(ensure_sandbox_pki, Path(tmp) / "pki", port=free_port())
        async with serve_sandbox_pki(pki), aiohttp.ClientSession() as session:
            baseline = HTTPTimeStamper(pki.tsa_url, session=session)
            client = TimeStampClient(
                session, [TsaEndpoint(pki.tsa_url)], TrustAnchors.load([pki.roots_pem])
            )
            digest = hashlib.sha256(b"bench").digest()
            await baseline.async_timestamp(digest, "sha256")  # warm-up both
            await client.timestamp(digest)
            for name, once in (
                ("pyHanko HTTPTimeStamper", lambda: baseline.async_timestamp(digest, "sha256")),
                ("sidecar checked client", lambda: client.timestamp(digest)),
            ):
                report(name, *await timed(once, n=n))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50))
