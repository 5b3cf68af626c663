"""``sidecar doctor``: find the broken link and say what to do about it.

A check is an async function given a :class:`DoctorContext` that returns
:class:`Finding` objects (one per thing it looked at: each key, each TSA...). The
core checks (configuration, permissions of secrets, disk space, the running daemon,
the sandbox services) live in :mod:`sidecar.doctor.checks`; each subsystem adds its
own without touching this package, in a module named in :data:`PLUGIN_MODULES`::

    # sidecar/trust/doctor.py
    from sidecar.doctor import DoctorContext, Finding

    async def tsa_check(ctx: DoctorContext) -> list[Finding]:
        ...
        return [Finding("tsa:incert", "fail", "no answer from https://...",
                        fix="check the proxy / firewall for ...")]

    DOCTOR_CHECKS = [("tsa", tsa_check)]

Reusable probes (RFC 3161 round trip with clock skew, OCSP, certificate expiry) are
in :mod:`sidecar.doctor.probes`. A check that raises or hangs is reported as a
failure of that check; it never stops the others.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..i18n import _
from .model import DoctorCheck, DoctorContext, Finding, Status, load_context_settings

__all__ = [
    "PLUGIN_MODULES",
    "DoctorCheck",
    "DoctorContext",
    "DoctorReport",
    "Finding",
    "Status",
    "all_checks",
    "load_context_settings",
    "register_check",
    "run_doctor",
]

log = logging.getLogger("sidecar.doctor")

_RANK: dict[Status, int] = {"skip": 0, "ok": 1, "warn": 2, "fail": 3}

#: Modules that may define ``DOCTOR_CHECKS = [(name, check), ...]``; a missing module
#: is skipped (the subsystem is not built yet).
PLUGIN_MODULES: tuple[str, ...] = (
    "sidecar.doctor.subsystems",  # keys and TSAs, until their subsystems ship their own
    "sidecar.keys.doctor",
    "sidecar.trust.doctor",
    "sidecar.cns.doctor",
    "sidecar.audit.doctor",
)

_registered: list[tuple[str, DoctorCheck]] = []


def register_check(name: str, check: DoctorCheck) -> None:
    """Add a check at run time (tests, or code that cannot use a plugin module)."""
    _registered.append((name, check))


def _plugin_checks() -> list[tuple[str, DoctorCheck]]:
    checks: list[tuple[str, DoctorCheck]] = []
    for module_name in PLUGIN_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue  # the subsystem (or its doctor module) does not exist yet
            raise
        checks.extend(getattr(module, "DOCTOR_CHECKS", ()))
    return checks


def all_checks() -> list[tuple[str, DoctorCheck]]:
    """Core checks, then the subsystems', then the ones registered at run time."""
    from .checks import CORE_CHECKS

    return [*CORE_CHECKS, *_plugin_checks(), *_registered]


@dataclass(frozen=True)
class DoctorReport:
    findings: tuple[Finding, ...]

    @property
    def status(self) -> Status:
        worst = max((_RANK[f.status] for f in self.findings), default=1)
        return next(s for s, r in _RANK.items() if r == max(worst, 1))

    @property
    def broken(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail"]

    @property
    def exit_code(self) -> int:
        return 1 if self.broken else 0

    def as_json(self) -> dict[str, Any]:
        from .. import __version__

        return {
            "status": self.status,
            "version": __version__,
            "broken": [f.check for f in self.broken],
            "checks": [f.as_json() for f in self.findings],
        }


async def _run_one(
    name: str, check: DoctorCheck, ctx: DoctorContext, per_check_seconds: float
) -> list[Finding]:
    try:
        async with asyncio.timeout(per_check_seconds):
            return list(await check(ctx))
    except TimeoutError:
        return [
            Finding(
                name,
                "fail",
                _(
                    "the check did not finish within {seconds} s",
                    seconds=format(per_check_seconds, "g"),
                ),
                fix=_("run 'sidecar doctor' again; if it persists, look at the daemon's log"),
            )
        ]
    except Exception as exc:  # one broken check must not hide the others
        log.debug("doctor check %s crashed", name, exc_info=True)
        failed = _(
            "the check itself failed: {error}: {message}", error=type(exc).__name__, message=exc
        )
        return [Finding(name, "fail", failed)]


async def run_doctor(
    ctx: DoctorContext,
    checks: Sequence[tuple[str, DoctorCheck]] | None = None,
    *,
    per_check_seconds: float = 60.0,
) -> DoctorReport:
    """Run the checks concurrently; findings keep the checks' order."""
    chosen = all_checks() if checks is None else list(checks)
    results = await asyncio.gather(
        *(_run_one(name, check, ctx, per_check_seconds) for name, check in chosen)
    )
    return DoctorReport(tuple(f for findings in results for f in findings))
