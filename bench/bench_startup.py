"""Start-up time and memory of a real ``sidecar serve --sandbox``.

- ``second start to health``: from the process's launch until ``GET /v1/health``
  answers 200, on a sandbox already generated (the first start, which generates the
  PKI, is not counted); median and p95 of N starts, and the CPU time the daemon's
  process spent until then (wall time on a loaded machine is mostly waiting).
- ``PSS idle``: the proportional set size (``/proc/PID/smaps_rollup``) summed over the
  daemon and every process under it (forkserver, workers), once it has answered and
  settled; the first XAdES and PAdES signature after start, one at a time (they pay
  for the workers' start on need); ``PSS after 200 signatures``: the same after 100
  XAdES and 100 PAdES B-LT signatures (4 at a time). PSS shares each shared page among
  the processes mapping it, so the sum is what the tree costs the machine (RSS would
  count shared pages once per process).

    .venv/bin/python bench/bench_startup.py [N] [--signatures 200]

Linux only (``/proc``). Figures move with the machine's load: run ``uptime`` first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
from stats import (
    cpu_seconds,
    free_port,
    process_tree,
    process_tree_breakdown,
    process_tree_memory,
    summarize,
    timed,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "profiles" / "samples"


def start(home: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sidecar", "serve", "--sandbox", "--port", str(port)],
        env={**os.environ, "SIDECAR_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=(home / "bench-stderr.log").open("ab"),
    )


def wait_healthy(process: subprocess.Popen[bytes], port: int, timeout: float = 300) -> float:
    """Seconds from now until /v1/health answers 200 (polled every 10 ms)."""
    begin = time.perf_counter()
    url = f"http://127.0.0.1:{port}/v1/health"
    while time.perf_counter() - begin < timeout:
        if process.poll() is not None:
            raise SystemExit(f"sidecar exited {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                if response.status == 200:
                    return time.perf_counter() - begin
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.01)
    raise SystemExit("sidecar did not answer /v1/health")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def pss_mib(pid: int) -> tuple[float, int]:
    """PSS summed over the process tree of *pid*, in MiB, and how many processes."""
    return process_tree_memory(pid)[1] / 2**20, len(process_tree(pid))


async def sign(port: int, token: str, count: int, firsts: list[float]) -> list[float]:
    xml = (SAMPLES / "ecit.xml").read_bytes()
    pdf = (SAMPLES / "fee-note.pdf").read_bytes()
    base = f"http://127.0.0.1:{port}/v1"
    headers = {"Authorization": f"Bearer {token}"}
    done = 0
    async with aiohttp.ClientSession(headers=headers) as session:

        async def one() -> None:
            nonlocal done
            done += 1
            if done % 2:
                route, body, kind = "/xml/sign?level=B-LT", xml, "application/xml"
            else:
                route, body, kind = "/pdf/sign?level=B-LT", pdf, "application/pdf"
            async with session.post(
                base + route, data=body, headers={"Content-Type": kind}
            ) as response:
                await response.read()
                if response.status != 200:
                    raise SystemExit(f"{route}: {response.status} {await response.text()}")

        # The first of each kind alone: the workers start on need, so it pays for their
        # start (and the forkserver's) once.
        for _ in range(2):
            started = time.perf_counter()
            await one()
            firsts.append(time.perf_counter() - started)
        samples, _ = await timed(one, n=count, concurrency=4)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=5, help="second starts timed")
    parser.add_argument("--signatures", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        # Explicit free ports: also runs the code from before sandboxes took their own.
        (home / "sidecar.toml").write_text(
            f"[sandbox]\nport = {free_port()}\ncns_port = {free_port()}\n", encoding="utf-8"
        )
        port = free_port()
        process = start(home, port)
        print(f"first start (generates the sandbox): {wait_healthy(process, port):.2f} s")
        stop(process)
        times = []
        cpu = []
        for _ in range(args.n):
            launched = time.perf_counter()
            process = start(home, port)
            wait_healthy(process, port)
            times.append(time.perf_counter() - launched)
            # The daemon's own process: what a loaded machine does not inflate.
            cpu.append(cpu_seconds([process.pid]))
            last = process
            if len(times) < args.n:
                stop(process)
        summary = summarize(times)
        print(
            f"second start to health: median {summary.p50_ms / 1000:.2f} s, "
            f"p95 {summary.p95_ms / 1000:.2f} s (n={summary.n}; "
            + ", ".join(f"{t:.2f}" for t in times)
            + ")"
        )
        print(f"CPU of the daemon's process until then: median {statistics.median(cpu):.2f} s")
        try:
            time.sleep(2.0)  # let what starts in the background settle
            pss, processes = pss_mib(last.pid)
            print(f"PSS idle after start: {pss:.1f} MiB over {processes} processes")
            print(f"  per process (MiB): {process_tree_breakdown(last.pid)}")
            token = (home / "default.token").read_text().strip()
            firsts: list[float] = []
            samples = asyncio.run(sign(port, token, args.signatures, firsts))
            print(
                f"first XAdES-B-LT after start {firsts[0] * 1000:.0f} ms, "
                f"first PAdES-B-LT {firsts[1] * 1000:.0f} ms (workers started on need)"
            )
            pss, processes = pss_mib(last.pid)
            print(summarize(samples).line(f"{len(samples)} signatures (XAdES+PAdES B-LT, c=4)"))
            print(f"PSS after {len(samples)} signatures: {pss:.1f} MiB over {processes} processes")
            print(f"  per process (MiB): {process_tree_breakdown(last.pid)}")
        finally:
            stop(last)


if __name__ == "__main__":
    main()
