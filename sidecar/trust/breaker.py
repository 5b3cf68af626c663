"""A circuit breaker per upstream, so that a dead TSA does not cost every request its timeout.

``closed``: requests go through; ``failure_threshold`` consecutive failures open it.
``open``: requests are refused without a connection attempt until ``cool_down``
seconds have passed; then ``half_open``: exactly one probe goes through, and its
outcome closes the circuit or opens it for another cool-down.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["BreakerState", "BreakerStatus", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class BreakerStatus:
    state: BreakerState
    consecutive_failures: int
    #: Seconds until an open circuit lets a probe through (0 when not open).
    retry_after: float
    total_failures: int
    total_successes: int


class CircuitBreaker:
    """Not thread-safe: used from the event loop only."""

    def __init__(
        self,
        failure_threshold: int = 3,
        cool_down: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or cool_down <= 0:
            raise ValueError("failure_threshold must be >= 1 and cool_down > 0")
        self.failure_threshold = failure_threshold
        self.cool_down = cool_down
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self.total_failures = 0
        self.total_successes = 0

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.cool_down:
            return "half_open"
        return "open"

    def retry_after(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cool_down - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """Whether a request may go now; in half-open state, only the one probe."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        self.total_successes += 1
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        self.total_failures += 1
        self._failures += 1
        if self._probing or self._failures >= self.failure_threshold:
            # A failed probe re-opens for a whole new cool-down.
            self._opened_at = self._clock()
        self._probing = False

    def release(self) -> None:
        """The request let through ended with no verdict (cancelled): free the probe slot."""
        self._probing = False

    def status(self) -> BreakerStatus:
        return BreakerStatus(
            state=self.state,
            consecutive_failures=self._failures,
            retry_after=math.ceil(self.retry_after()) if self.state == "open" else 0.0,
            total_failures=self.total_failures,
            total_successes=self.total_successes,
        )
