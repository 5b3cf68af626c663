"""What every benchmark here prints, computed one way: p50, p95, throughput.

Run the benchmarks as scripts (``python bench/bench_x.py``): this module sits beside
them on ``sys.path``.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Summary", "cpu_seconds", "free_port", "summarize"]


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
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    elapsed = wall if wall is not None else sum(ordered)
    return Summary(
        n=len(ordered),
        p50_ms=statistics.median(ordered) * 1000,
        p95_ms=p95 * 1000,
        per_second=len(ordered) / elapsed if elapsed else math.inf,
    )


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
