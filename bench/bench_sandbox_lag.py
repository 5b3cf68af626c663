"""What the sandbox PKI's responders cost the daemon's event loop (issue #19).

Starts ``sidecar serve --sandbox`` in a temporary home, lets it settle, and reads the
daemon's own loop-lag histogram (``sidecar_event_loop_lag_seconds`` in ``/metrics``)
over two windows of ``--seconds``: the daemon idle, then the daemon idle but for its
sandbox TSA answering ``--rate`` timestamp requests a second (the responders run in a
thread of the daemon's process: what they compute holds its GIL). Percentiles are
the upper bounds of the histogram's buckets. Also the CPU the daemon's process spent
per TSA reply (its threads together: the responders' and the loop's).

    .venv/bin/python bench/bench_sandbox_lag.py [--seconds 20] [--rate 20]

Bounded in time; traffic goes only to the loopback daemon it started. Linux (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import tempfile
import time
from pathlib import Path

import aiohttp
from bench_mixed import admin_token, lag_buckets, lag_percentile
from bench_soak import start_daemon, stop_daemon, wait_ready
from stats import cpu_seconds, free_port

from sidecar.trust.tsa import make_request


async def main(seconds: float, rate: float, clients: int = 4) -> None:
    with tempfile.TemporaryDirectory(prefix="sidecar-sandbox-lag-") as directory:
        home = Path(directory)
        port = free_port()
        process = start_daemon(home, port)
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_ready(base, process)
            admin = admin_token(home)
            meta = json.loads((home / "sandbox" / "sandbox.json").read_text())
            query = make_request(hashlib.sha256(b"lag").digest(), "sha256").dump()
            headers = {"Content-Type": "application/timestamp-query"}
            async with aiohttp.ClientSession() as session:
                await asyncio.sleep(3)  # settle after the start
                idle = await lag_buckets(session, base, admin)
                await asyncio.sleep(seconds)
                loaded = await lag_buckets(session, base, admin)
                done = 0
                cpu = cpu_seconds([process.pid])
                end = time.monotonic() + seconds

                async def client() -> None:
                    nonlocal done
                    while time.monotonic() < end:
                        async with session.post(
                            meta["tsa_url"], data=query, headers=headers
                        ) as response:
                            await response.read()
                            if response.status != 200:
                                raise SystemExit(f"the sandbox TSA answered {response.status}")
                        done += 1
                        await asyncio.sleep(clients / rate)

                await asyncio.gather(*(client() for _ in range(clients)))
                cpu = cpu_seconds([process.pid]) - cpu
                after = await lag_buckets(session, base, admin)
        finally:
            stop_daemon(process, home)

    def lag(before: dict[float, float], later: dict[float, float]) -> str:
        p50, p99 = (lag_percentile(before, later, share) * 1000 for share in (0.5, 0.99))
        return f"p50 <= {p50:g} ms, p99 <= {p99:g} ms"

    print(f"loop lag, daemon idle ({seconds:g} s):                 {lag(idle, loaded)}")
    print(
        f"loop lag, sandbox TSA at {done / seconds:.0f} replies/s ({seconds:g} s): "
        f"{lag(loaded, after)}"
    )
    print(f"CPU of the daemon's process per TSA reply: {cpu / max(done, 1) * 1000:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=20)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.seconds, arguments.rate))
