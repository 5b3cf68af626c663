"""Request rates per client: a token bucket each.

A rate ``"N/s"`` (or ``/min``, ``/h``) lets a client send N requests at once and then
N per period, refilled continuously: a workstation's burst (a morning's batch of
forms) passes, a runaway loop is held to the rate. Nothing here knows HTTP: the API
door asks :meth:`RateLimiter.take` and answers ``429`` with the wait it returns.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Rate", "RateLimiter", "parse_rate"]

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|min|minute|h|hour)\s*$", re.IGNORECASE)
_PERIOD = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0}
_PERIOD |= {"h": 3600.0, "hour": 3600.0}


@dataclass(frozen=True)
class Rate:
    """*count* requests per *period* seconds; also the burst a full bucket allows."""

    count: int
    period: float

    @property
    def per_second(self) -> float:
        return self.count / self.period


def parse_rate(text: str) -> Rate:
    """``"20/s"``, ``"600/min"``, ``"10000/h"`` → a :class:`Rate`."""
    match = _RATE.match(text)
    if match is None:
        raise ValueError('expected a rate such as "20/s", "600/min" or "10000/h"')
    count = int(match.group(1))
    if count <= 0:
        raise ValueError("must allow at least 1 request")
    return Rate(count, _PERIOD[match.group(2).lower()])


class _Bucket:
    __slots__ = ("level", "rate", "stamp")

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self.level = float(rate.count)
        self.stamp = now


class RateLimiter:
    """One bucket per client name, made on the client's first request.

    Only authenticated clients are limited, so the buckets are bounded by the
    clients file: a name per client.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, who: str, rate: Rate) -> float:
        """Spend one request of *who*'s bucket: ``0.0`` when allowed, else the seconds
        until one is (nothing spent). A changed *rate* (clients file edited) starts a
        full bucket at the new rate."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(who)
            if bucket is None or bucket.rate != rate:
                bucket = self._buckets[who] = _Bucket(rate, now)
            bucket.level = min(
                float(rate.count), bucket.level + (now - bucket.stamp) * rate.per_second
            )
            bucket.stamp = now
            if bucket.level >= 1.0:
                bucket.level -= 1.0
                return 0.0
            return (1.0 - bucket.level) / rate.per_second
