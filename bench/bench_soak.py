"""Soak: many clients on mixed routes for minutes; the daemon's memory must stay flat.

Starts ``sidecar serve --sandbox`` in a temporary home (free ports), then runs
``--clients`` loops (default 50) for ``--seconds`` (default 600) over a fixed-seed mix
of routes: UUIDs, health, XAdES signing at B-B and B-LT, verification, the fee-note
recipe with its PDF, deposits of unsigned fee notes, and reading and listing CNS
messages. Every ``--sample`` seconds (default 30) it records the RSS and PSS of the
daemon's whole process tree (the daemon, its workers and the forkserver), and prints:

- per route: count, p50, p99, and the share of 5xx answers (must be 0 but for 503/504
  from an upstream);
- the memory samples, and the slope of PSS and RSS after ``--warmup`` seconds, in
  MB per minute, by least squares: the issue's goal is < 1 MB/min.

Bounded in time and in count (each loop stops at the deadline); traffic goes only
to the loopback daemon it started. Linux (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import aiohttp
from stats import free_port, percentile, process_tree_memory

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "profiles" / "samples"

#: Route name → weight in the mix (what a practice's day looks like, roughly).
MIX = {
    "uuids": 10,
    "health": 5,
    "xml-sign-B-B": 10,
    "xml-sign-B-LT": 10,
    "verify": 10,
    "form-sign": 8,
    "deposit": 8,
    "message": 20,
    "list": 10,
}


def fee_note() -> bytes:
    """The sample fee note with a fresh UUID (deposits must not repeat one)."""
    text = (SAMPLES / "fee-note.xml").read_bytes()
    return text.replace(b"<UUID></UUID>", f"<UUID>{uuid.uuid4()}</UUID>".encode(), 1)


class Soak:
    """Clients on a weighted mix of routes (:data:`MIX` unless told otherwise)."""

    def __init__(self, base: str, token: str, seed: int, mix: dict[str, int] | None = None) -> None:
        self.mix = mix or MIX
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}
        self.random = random.Random(seed)
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.server_errors: dict[str, int] = defaultdict(int)
        self.deposited: list[str] = []
        self.forms: list[bytes] = []
        self.refusals: dict[str, int] = defaultdict(int)
        self.signed: bytes | None = None
        self.form = (SAMPLES / "fee-note.xml").read_bytes()
        self.pdf = (SAMPLES / "fee-note.pdf").read_bytes()

    async def one(
        self, session: aiohttp.ClientSession, route: str, scheduled: float | None = None
    ) -> None:
        """One request of *route*; its latency counts from *scheduled* (a
        ``time.perf_counter()`` instant) when given: a paced client that fell behind its
        schedule has waited too, and hiding that wait would flatter the figures."""
        xml = {**self.headers, "Content-Type": "application/xml"}
        started = time.perf_counter() if scheduled is None else scheduled
        if route == "uuids":
            response = await session.get(f"{self.base}/v1/uuids?count=5", headers=self.headers)
        elif route == "health":
            response = await session.get(f"{self.base}/v1/health", headers=self.headers)
        elif route.startswith("xml-sign"):
            level = route.removeprefix("xml-sign-")
            response = await session.post(
                f"{self.base}/v1/xml/sign?level={level}", data=fee_note(), headers=xml
            )
        elif route == "verify":
            if self.signed is None:
                return
            response = await session.post(f"{self.base}/v1/verify", data=self.signed, headers=xml)
        elif route == "form-sign":
            form = aiohttp.FormData()
            form.add_field("xml", fee_note(), content_type="application/xml")
            form.add_field("pdf", self.pdf, content_type="application/pdf")
            response = await session.post(
                f"{self.base}/v1/forms/fee-note/sign", data=form, headers=self.headers
            )
        elif route == "deposit":
            if not self.forms:
                return
            # A signed fee note (from the recipe, each with its own UUID), once each.
            response = await session.post(
                f"{self.base}/v1/cns/fee-notes", data=self.forms.pop(), headers=xml
            )
        elif route == "message":
            if not self.deposited:
                return
            chosen = self.random.choice(self.deposited)
            response = await session.get(
                f"{self.base}/v1/cns/messages/{chosen}", headers=self.headers
            )
        else:
            response = await session.get(f"{self.base}/v1/cns/messages", headers=self.headers)
        body = await response.read()
        self.latencies[route].append(time.perf_counter() - started)
        if response.status >= 500 and response.status not in (503, 504):
            self.server_errors[route] += 1
        if response.status >= 400 and route != "message":
            self.refusals[route] += 1
        if route == "xml-sign-B-LT" and response.status == 200 and self.signed is None:
            self.signed = body
        if route == "form-sign" and response.status == 200:
            self.forms.append(body)
            del self.forms[:-50]
        if route == "deposit" and response.status == 202:
            self.deposited.append((await response.json(content_type=None))["uuid"])
            del self.deposited[:-500]  # bounded: the latest are enough to read

    async def client(self, session: aiohttp.ClientSession, deadline: float) -> None:
        routes, weights = zip(*self.mix.items(), strict=True)
        while time.monotonic() < deadline:
            route = self.random.choices(routes, weights)[0]
            try:
                await self.one(session, route)
            except (aiohttp.ClientError, TimeoutError):
                self.server_errors[f"{route} (connection)"] += 1

    async def paced_client(
        self, session: aiohttp.ClientSession, deadline: float, rate: float
    ) -> None:
        """One client sending *rate* requests a second on average (exponential gaps: a
        Poisson stream), one at a time; each request's latency counts from when the
        schedule wanted it sent, so a backlog shows in the figures instead of slowing
        the offered load down unnoticed."""
        routes, weights = zip(*self.mix.items(), strict=True)
        scheduled = time.perf_counter() + self.random.expovariate(rate)
        while time.monotonic() < deadline:
            pause = scheduled - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            route = self.random.choices(routes, weights)[0]
            try:
                await self.one(session, route, scheduled)
            except (aiohttp.ClientError, TimeoutError):
                self.server_errors[f"{route} (connection)"] += 1
            scheduled += self.random.expovariate(rate)


def print_routes(soak: Soak) -> None:
    """Per route: count, p50, p99, refusals (4xx) and server errors (5xx)."""
    print(f"\n{'route':<16} {'n':>7} {'p50 ms':>9} {'p99 ms':>9} {'4xx':>5} {'5xx':>5}")
    for route in soak.mix:
        samples = soak.latencies.get(route, [])
        if not samples:
            continue
        p50 = percentile(samples, 0.5) * 1000
        p99 = percentile(samples, 0.99) * 1000
        errors = soak.server_errors.get(route, 0)
        refused = soak.refusals.get(route, 0)
        print(f"{route:<16} {len(samples):>7} {p50:>9.1f} {p99:>9.1f} {refused:>5} {errors:>5}")
    other = {k: v for k, v in soak.server_errors.items() if k not in soak.mix}
    if other:
        print("connection errors:", other)


def slope_mb_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, bytes) points, in MB per minute."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return (cov / var) * 60 / 2**20 if var else float("nan")


def start_daemon(home: Path, port: int) -> subprocess.Popen[bytes]:
    """``sidecar serve --sandbox`` in *home* (its ``sidecar.toml`` if any), on *port*."""
    env = {**os.environ, "SIDECAR_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "sidecar", "serve", "--sandbox", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(home / "daemon.log").open("wb"),
    )


def stop_daemon(process: subprocess.Popen[bytes], home: Path) -> None:
    """SIGTERM, and the end of its log on stderr if it did not stop cleanly."""
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    if process.returncode not in (0, -signal.SIGTERM):
        print((home / "daemon.log").read_text(errors="replace")[-2000:], file=sys.stderr)


async def wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            if process.poll() is not None:
                raise SystemExit(f"the daemon exited with {process.returncode}")
            try:
                async with session.get(f"{base}/v1/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the daemon did not answer within 60 s")


async def main(clients: int, seconds: float, sample: float, warmup: float, seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="sidecar-soak-") as directory:
        home = Path(directory)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        process = start_daemon(home, port)
        try:
            await wait_ready(base, process)
            soak = Soak(base, (home / "default.token").read_text().strip(), seed)
            memory: list[tuple[float, int, int]] = []
            started = time.monotonic()
            deadline = started + seconds
            connector = aiohttp.TCPConnector(limit=clients)
            timeout = aiohttp.ClientTimeout(total=120)

            async def sampler() -> None:
                while True:
                    rss, pss = process_tree_memory(process.pid)
                    memory.append((time.monotonic() - started, rss, pss))
                    print(
                        f"  t={memory[-1][0]:6.0f} s  RSS {rss / 2**20:7.1f} MB  "
                        f"PSS {pss / 2**20:7.1f} MB",
                        flush=True,
                    )
                    if time.monotonic() >= deadline:
                        return
                    await asyncio.sleep(min(sample, max(0.0, deadline - time.monotonic())))

            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                print(f"soak: {clients} clients for {seconds:.0f} s, memory every {sample:.0f} s")
                await asyncio.gather(
                    sampler(), *(soak.client(session, deadline) for _ in range(clients))
                )
        finally:
            stop_daemon(process, home)

    print_routes(soak)
    settled = [m for m in memory if m[0] >= warmup]
    rss_slope = slope_mb_per_min([(t, rss) for t, rss, _ in settled])
    pss_slope = slope_mb_per_min([(t, pss) for t, _, pss in settled])
    print(
        f"\nafter {warmup:.0f} s of warm-up ({len(settled)} samples): "
        f"PSS slope {pss_slope:+.2f} MB/min, RSS slope {rss_slope:+.2f} MB/min (goal < 1)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--sample", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=120)
    parser.add_argument("--seed", type=int, default=15)
    arguments = parser.parse_args()
    asyncio.run(
        main(
            arguments.clients,
            arguments.seconds,
            arguments.sample,
            arguments.warmup,
            arguments.seed,
        )
    )
