"""What every benchmark here prints, computed one way: p50, p95, throughput.

Run the benchmarks as scripts (``python bench/bench_x.py``): this module sits beside
them on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Summary",
    "cpu_seconds",
    "free_port",
    "percentile",
    "process_memory",
    "process_tree",
    "process_tree_breakdown",
    "process_tree_memory",
    "summarize",
    "timed",
    "timed_sync",
]


@dataclass(frozen=True)
class Summary:
    n: int
    p50_ms: float
    p95_ms: float
    #: Operations per second of wall time (concurrent runs overlap their samples).
    per_second: float

    def line(self, name: str, width: int = 40, extra: str = "") -> str:
        return (
            f"{name:<{width}} n={self.n:<6} p50 {self.p50_ms:8.2f} ms  "
            f"p95 {self.p95_ms:8.2f} ms  {self.per_second:9.1f}/s{extra}"
        )


def summarize(samples: Sequence[float], wall: float | None = None) -> Summary:
    """Latencies in seconds; *wall* the elapsed time (default: their sum, i.e. sequential)."""
    ordered = sorted(samples)
    # Nearest-rank p95: the smallest sample with at least 95 % of samples at or below it.
    p95 = percentile(ordered, 0.95)
    elapsed = wall if wall is not None else sum(ordered)
    return Summary(
        n=len(ordered),
        p50_ms=statistics.median(ordered) * 1000,
        p95_ms=p95 * 1000,
        per_second=len(ordered) / elapsed if elapsed else math.inf,
    )


def percentile(samples: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0..1) of *samples*; NaN when there is none."""
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU time (user and system) used so far by these processes (Linux: /proc)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # gone, or not Linux: not counted
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


async def timed(
    call: Callable[[], Awaitable[object]],
    *,
    n: int | None = None,
    seconds: float | None = None,
    concurrency: int = 1,
    at_least: int = 0,
) -> tuple[list[float], float]:
    """Latencies (seconds) of ``call``, and the wall time they took.

    ``concurrency`` loops call it, one call at a time each, until ``n`` calls have
    started or ``seconds`` have passed (and at least ``at_least`` calls are done).
    A burst: ``n=k, concurrency=k``.
    """
    samples: list[float] = []
    started = 0
    deadline = None if seconds is None else time.perf_counter() + seconds

    def more() -> bool:
        if n is not None and started >= n:
            return False
        if deadline is not None and time.perf_counter() >= deadline:
            return len(samples) < at_least
        return True

    async def loop() -> None:
        nonlocal started
        while more():
            started += 1
            begin = time.perf_counter()
            await call()
            samples.append(time.perf_counter() - begin)

    begin = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return samples, time.perf_counter() - begin


def timed_sync(call: Callable[[], object], n: int) -> tuple[list[float], float]:
    """:func:`timed` for a blocking ``call``, ``n`` times in a row."""
    samples: list[float] = []
    begin = time.perf_counter()
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples, time.perf_counter() - begin


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant (Linux: /proc/PID/task/*/children)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                queue += [int(child) for child in (task / "children").read_text().split()]
            except OSError:  # the task ended meanwhile
                continue
    return found


def process_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes of one process; (0, 0) if it is gone."""
    rss = pss = 0
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:  # gone meanwhile
        return 0, 0
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == "Rss":
            rss += int(value.split()[0]) * 1024
        elif name == "Pss":
            pss += int(value.split()[0]) * 1024
    return rss, pss


def process_tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes summed over ``pid``'s process tree. PSS shares each page
    among the processes mapping it, so forkserver children are not counted twice."""
    members = [process_memory(member) for member in process_tree(pid)]
    return sum(rss for rss, _ in members), sum(pss for _, pss in members)


def process_tree_breakdown(pid: int) -> str:
    """One line: the PSS (MB) of each process of ``pid``'s tree, the root named ``root``,
    its children ``child`` (the forkserver) and theirs ``grandchild`` (its workers)."""
    parts = []
    for member in process_tree(pid):
        try:
            parent = int(Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
        kind = "root" if member == pid else "child" if parent == pid else "grandchild"
        parts.append(f"{kind} {process_memory(member)[1] / 2**20:.1f}")
    return ", ".join(parts)
