"""Mixed load of #19: 20 clients signing forms, depositing, reading and listing messages.

Starts ``sidecar serve --sandbox`` in a temporary home (free ports; ``[signing]
worker_idle_exit`` from ``--idle-exit``), then:

1. the process tree's PSS idle after start (``--settle`` seconds after it answers);
2. the single-client baseline: ``--baseline`` fee-note recipes (``POST
   /v1/forms/fee-note/sign``) one after another, p50;
3. ``--clients`` loops (default 20) for ``--seconds`` (default 120) over the mix
   (:data:`MIXED`), driven by :class:`bench_soak.Soak`; PSS every ``--sample``
   seconds;
4. per route p50/p99; the event loop's lag over the load, read from the daemon's
   ``sidecar_event_loop_lag_seconds`` histogram in ``/metrics`` (percentiles are the
   upper bound of the bucket they fall in: the histogram's resolution);
5. PSS once the load ended, and again after the workers' idle exit (``--idle-exit``
   plus a few seconds; also measured before the load), with the goals of #19 beside
   each figure. PSS is the daemon's process tree without the sandbox's stand-ins (the
   CNS simulator and the PKI's responders: child processes of the daemon in sandbox
   mode, which production does not run), whose PSS is printed apart.

Bounded in time; traffic goes only to the loopback daemon it started. Linux (/proc).

    .venv/bin/python bench/bench_mixed.py [--seconds 120] [--clients 20] [--workers N] [--rate R]

``--rate R``: the clients together offer R requests a second (each a Poisson stream,
latency counted from when the request was due) instead of the closed loop.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from bench_soak import Soak, print_routes, start_daemon, stop_daemon, wait_ready
from prometheus_client.parser import text_string_to_metric_families
from stats import (
    free_port,
    percentile,
    process_memory,
    process_tree,
    process_tree_breakdown,
    process_tree_memory,
)

#: The mix of #19 (a practice's programs at work): sign forms, deposit, read, list.
MIXED = {"form-sign": 25, "deposit": 20, "message": 40, "list": 15}

LAG = "sidecar_event_loop_lag_seconds"

MB = 2**20


def admin_token(home: Path) -> str:
    """A client with the admin scope (``/metrics``): the sandbox's default one has not."""
    created = subprocess.run(
        [sys.executable, "-m", "sidecar", "token", "create", "--scope", "admin", "bench"],
        env={**os.environ, "SIDECAR_HOME": str(home)},
        capture_output=True,
        text=True,
        check=True,
    )
    return created.stdout.strip()  # the token alone on stdout


async def lag_buckets(session: aiohttp.ClientSession, base: str, token: str) -> dict[float, float]:
    """The loop-lag histogram's cumulative buckets (upper bound → count) from /metrics."""
    headers = {"Authorization": f"Bearer {token}"}
    async with session.get(f"{base}/metrics", headers=headers) as response:
        if response.status != 200:
            raise SystemExit(f"/metrics answered {response.status}: {await response.text()}")
        text = await response.text()
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != LAG:
            continue
        for sample in family.samples:
            if sample.name == f"{LAG}_bucket":
                buckets[float(sample.labels["le"])] = sample.value
    return buckets


def lag_percentile(before: dict[float, float], after: dict[float, float], share: float) -> float:
    """The upper bound of the bucket holding the *share* percentile of the samples taken
    between two scrapes (seconds; inf if it lies beyond the last finite bucket)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if not total:
        return math.nan
    for bound, count in zip(bounds, counts, strict=True):
        if count >= share * total:
            return bound
    return math.inf


#: The sandbox's stand-ins run beside the daemon as its children: not what a practice
#: runs in production (there the CNS is the CNS's), so their memory is reported apart.
SANDBOX_HELPERS = ("sidecar.cns.simulator_process", "sidecar.sandbox.services_process")


def sandbox_helpers(pid: int) -> list[int]:
    """The processes of *pid*'s tree that are the sandbox's stand-ins (the CNS simulator,
    the PKI's responders)."""
    found = []
    for member in process_tree(pid):
        try:
            command = Path(f"/proc/{member}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:  # gone meanwhile
            continue
        if any(helper.encode() in command for helper in SANDBOX_HELPERS):
            found.append(member)
    return found


def sandbox_pss_mb(pid: int) -> float:
    """PSS of the sandbox's stand-ins (MB)."""
    return sum(process_memory(member)[1] for member in sandbox_helpers(pid)) / MB


def pss_mb(pid: int) -> float:
    """PSS of the daemon's process tree (MB), without the sandbox's stand-ins."""
    return process_tree_memory(pid)[1] / MB - sandbox_pss_mb(pid)


def breakdown(pid: int) -> str:
    """Every process's PSS (``stats.process_tree_breakdown``), the stand-ins named."""
    helpers = ", ".join(f"{process_memory(m)[1] / MB:.1f}" for m in sandbox_helpers(pid))
    return f"{process_tree_breakdown(pid)}; of which the sandbox's stand-ins: {helpers}"


async def main(arguments: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="sidecar-mixed-") as directory:
        home = Path(directory)
        workers = arguments.workers
        pool = f"xml_workers = {workers}\npdf_workers = {workers}\n" if workers else ""
        (home / "sidecar.toml").write_text(
            f"[signing]\nworker_idle_exit = {arguments.idle_exit}\n{pool}", encoding="utf-8"
        )
        port = free_port()
        process = start_daemon(home, port)
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_ready(base, process)
            token = (home / "default.token").read_text().strip()
            soak = Soak(base, token, arguments.seed, mix=MIXED)
            admin = admin_token(home)
            await asyncio.sleep(arguments.settle)
            idle_start = pss_mb(process.pid)
            print(f"idle after start, PSS MB: {breakdown(process.pid)}", flush=True)
            # Workers start on need: none should run yet. If some do (a build that starts
            # them with the daemon), they end once unused for idle_exit seconds.
            if (
                len(process_tree(process.pid)) > 1 + len(sandbox_helpers(process.pid))
                and arguments.idle_exit
            ):
                await asyncio.sleep(2 * arguments.idle_exit + 3)
            idle_start_exited = pss_mb(process.pid)
            print(f"... without workers: {breakdown(process.pid)}", flush=True)
            connector = aiohttp.TCPConnector(limit=arguments.clients + 2)
            timeout = aiohttp.ClientTimeout(total=120)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                # The single-client baseline (its signed forms feed the deposits).
                for _ in range(arguments.baseline):
                    await soak.one(session, "form-sign")
                single = soak.latencies.pop("form-sign", [])
                print(
                    f"single client: form-sign n={len(single)} "
                    f"p50 {percentile(single, 0.5) * 1000:.1f} ms",
                    flush=True,
                )
                memory: list[tuple[float, float]] = []
                helpers: list[float] = []
                before = await lag_buckets(session, base, admin)
                started = time.monotonic()
                deadline = started + arguments.seconds

                async def sampler() -> None:
                    while time.monotonic() < deadline:
                        memory.append((time.monotonic() - started, pss_mb(process.pid)))
                        helpers.append(sandbox_pss_mb(process.pid))
                        at, pss = memory[-1]
                        print(
                            f"  t={at:5.0f} s  PSS {pss:6.1f} MB "
                            f"(+ sandbox stand-ins {helpers[-1]:.1f} MB)",
                            flush=True,
                        )
                        await asyncio.sleep(min(arguments.sample, deadline - time.monotonic()))

                rate = arguments.rate / arguments.clients if arguments.rate else 0.0
                load = (
                    f"each paced at {rate:g} requests/s (offered {arguments.rate:g}/s in all)"
                    if rate
                    else "closed loop (each sends its next request when answered)"
                )
                print(
                    f"mixed: {arguments.clients} clients, {arguments.seconds:.0f} s, {load}",
                    flush=True,
                )
                clients = (
                    soak.paced_client(session, deadline, rate)
                    if rate
                    else soak.client(session, deadline)
                    for _ in range(arguments.clients)
                )
                await asyncio.gather(sampler(), *clients)
                elapsed = time.monotonic() - started
                after = await lag_buckets(session, base, admin)
                after_load = pss_mb(process.pid)
                print(f"after the load, PSS MB: {breakdown(process.pid)}")
                # The workers end once unused for idle_exit seconds (checked that often).
                await asyncio.sleep(2 * arguments.idle_exit + 3 if arguments.idle_exit else 0)
                after_idle = pss_mb(process.pid)
                print(f"after the idle exit, PSS MB: {breakdown(process.pid)}")
        finally:
            stop_daemon(process, home)

    print_routes(soak)
    answered = sum(len(v) for v in soak.latencies.values())
    forms = len(soak.latencies.get("form-sign", []))
    print(
        f"\nthroughput: {answered / elapsed:.1f} requests/s, {forms / elapsed:.1f} form recipes/s "
        f"over {elapsed:.0f} s"
        + (f" (offered {arguments.rate:g} requests/s)" if arguments.rate else "")
    )
    if not arguments.rate:
        # Little's law: in a closed loop the clients are always in a request, so the mean
        # latency is clients / throughput whatever the scheduling: latency goals there are
        # throughput goals.
        print(
            f"closed loop: mean latency = clients / throughput = {arguments.clients} / "
            f"{answered / elapsed:.1f} = {arguments.clients / (answered / elapsed) * 1000:.1f} ms"
        )
    single_p50 = percentile(single, 0.5) * 1000
    form_p99 = percentile(soak.latencies.get("form-sign", []), 0.99) * 1000
    reads = soak.latencies.get("message", []) + soak.latencies.get("list", [])
    lag_p50, lag_p99 = (lag_percentile(before, after, s) * 1000 for s in (0.5, 0.99))
    samples = after.get(math.inf, 0.0) - before.get(math.inf, 0.0)
    under_load = max(m for _, m in memory) if memory else math.nan
    print(
        f"\nloop lag over the load ({samples:.0f} samples, bucket bounds): "
        f"p50 <= {lag_p50:g} ms, p99 <= {lag_p99:g} ms"
    )
    print("\ngoal of #19                                   measured")
    print(f"reads (message, list) p99 <= 25 ms            {percentile(reads, 0.99) * 1000:.1f} ms")
    print(
        f"form-sign p99 <= 4 x single p50 ({4 * single_p50:.0f} ms)     "
        f"{form_p99:.1f} ms ({form_p99 / single_p50:.1f} x)"
    )
    print(f"event-loop lag p99 <= 2 ms                    <= {lag_p99:g} ms")
    print(
        "\nPSS: the daemon's process tree (the daemon, the forkserver, the workers), without "
        "the sandbox's stand-ins (its CNS simulator and PKI responders: child processes "
        "that production does not run)"
    )
    print(f"PSS idle after start <= 100 MB                {idle_start:.1f} MB")
    print(f"  ...once no worker runs                      {idle_start_exited:.1f} MB")
    print(f"PSS under the mixed load <= 160 MB            {under_load:.1f} MB (max of samples)")
    print(f"PSS right after the load                      {after_load:.1f} MB")
    print(
        f"  the sandbox's stand-ins, apart              "
        f"{max(helpers) if helpers else math.nan:.1f} MB (max of samples)"
    )
    print(
        f"PSS after the workers' idle exit              {after_idle:.1f} MB "
        f"(worker_idle_exit = {arguments.idle_exit:g} s)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--sample", type=float, default=10)
    parser.add_argument("--baseline", type=int, default=20)
    parser.add_argument("--settle", type=float, default=5)
    parser.add_argument("--idle-exit", type=float, default=10)
    parser.add_argument("--seed", type=int, default=19)
    # Requests a second offered by all the clients together, each a Poisson stream of
    # its share, latency counted from the scheduled send; 0: a closed loop (each client
    # sends its next request as soon as the last is answered: the machine saturated).
    parser.add_argument("--rate", type=float, default=0.0)
    # The worker pool XAdES drafts and PDF steps share ([signing] xml_workers and
    # pdf_workers); unset: the daemon's defaults (2 on 2 cores).
    parser.add_argument("--workers", type=int, default=None)
    asyncio.run(main(parser.parse_args()))
