"""Health checks: each subsystem registers one; ``GET /v1/health`` runs them.

Kept outside the API layer so that keys, trust and the CNS outbox can offer checks
without knowing HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["CheckResult", "HealthCheck", "Status", "overall", "run_checks"]

Status = Literal["ok", "degraded", "down"]


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    #: A critical check that is down makes the whole daemon ``down``, not ``degraded``.
    critical: bool = False

    def as_json(self) -> dict[str, Any]:
        entry = asdict(self)
        entry.pop("critical")
        if not self.data:
            entry.pop("data")
        return entry


HealthCheck = Callable[[], Awaitable[CheckResult]]


async def run_checks(
    checks: Sequence[tuple[str, HealthCheck]], per_check_seconds: float
) -> list[CheckResult]:
    """Run every check concurrently; one that hangs or raises is reported ``down``."""

    async def one(name: str, check: HealthCheck) -> CheckResult:
        try:
            async with asyncio.timeout(per_check_seconds):
                return await check()
        except TimeoutError:
            return CheckResult(name, "down", f"no answer within {per_check_seconds:g} s")
        except Exception as exc:  # a broken check must not break /v1/health
            return CheckResult(name, "down", f"check failed: {type(exc).__name__}")

    return list(await asyncio.gather(*(one(n, c) for n, c in checks)))


def overall(results: Sequence[CheckResult]) -> Status:
    if any(r.status == "down" and r.critical for r in results):
        return "down"
    if any(r.status != "ok" for r in results):
        return "degraded"
    return "ok"
