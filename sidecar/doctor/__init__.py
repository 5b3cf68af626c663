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
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import aiohttp

from ..i18n import _
from ..paths import Paths
from ..runtime import DaemonRuntime, read_runtime

if TYPE_CHECKING:
    from ..config import Settings
    from ..sandbox.pki import SandboxPKI

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

Status = Literal["ok", "warn", "fail", "skip"]
_RANK: dict[Status, int] = {"skip": 0, "ok": 1, "warn": 2, "fail": 3}


@dataclass(frozen=True)
class Finding:
    """What one check found about one thing."""

    #: What was checked, ``area`` or ``area:item`` (``tsa:incert``, ``key:dr-x``).
    check: str
    status: Status
    #: What was found, for a person: "certificate expires in 10 days (2025-06-01)".
    summary: str
    #: What to do about it (empty when nothing is to be done).
    fix: str = ""
    #: Machine-readable details for ``--json`` (numbers, dates, URLs).
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "check": self.check,
            "status": self.status,
            "summary": self.summary,
        }
        if self.fix:
            entry["fix"] = self.fix
        if self.data:
            entry["data"] = self.data
        return entry


@dataclass
class DoctorContext:
    """What every check may use."""

    paths: Paths
    #: None when the configuration cannot be loaded (the ``config`` check says why).
    settings: Settings | None
    sandbox: bool
    session: aiohttp.ClientSession
    #: The file the settings come from (given with --config, or the default one).
    config_file: Path | None = None
    #: Why the configuration could not be loaded.
    config_error: str | None = None
    #: The local clock; tests shift it to play a machine whose clock is off.
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    #: Seconds a network probe may take.
    timeout: float = 10.0
    #: Where to look for the daemon (``--host``/``--port``), instead of ``[server]``'s.
    host: str | None = None
    port: int | None = None
    _sandbox_pki: SandboxPKI | None = field(default=None, repr=False)
    _runtime: list[DaemonRuntime | None] = field(default_factory=list, repr=False)

    def now(self) -> datetime:
        return self.clock()

    def running_daemon(self) -> DaemonRuntime | None:
        """This installation's daemon, from its runtime file, if its process is alive."""
        if not self._runtime:
            runtime = read_runtime(self.paths)
            self._runtime.append(runtime if runtime is not None and runtime.alive else None)
        return self._runtime[0]

    def start_sandbox_hint(self) -> str:
        """What to do when the sandbox's services do not answer: start it only when
        this installation's daemon is not already running it."""
        daemon = self.running_daemon()
        if daemon is None:
            return _("run the sandbox daemon: sidecar serve --sandbox")
        if not daemon.sandbox:
            return _(
                "this installation's daemon (pid {pid}) runs without the sandbox: "
                "stop it and run 'sidecar serve --sandbox'",
                pid=daemon.pid,
            )
        return _(
            "the sandbox daemon (pid {pid}, port {port}) is running but this "
            "part of it does not answer: look at its log (stderr), then restart it",
            pid=daemon.pid,
            port=daemon.port,
        )

    def sandbox_pki(self) -> SandboxPKI | None:
        """The generated sandbox PKI in the data directory, if there is one (never made here)."""
        if self._sandbox_pki is None:
            from ..sandbox.pki import METADATA_FILE, ensure_sandbox_pki

            directory = self.paths.sandbox_dir
            if not (directory / METADATA_FILE).exists():
                return None
            settings = self.settings.sandbox if self.settings else None
            kwargs: dict[str, Any] = (
                {"host": settings.host, "port": settings.port, "cns_port": settings.cns_port}
                if settings
                else {}
            )
            self._sandbox_pki = ensure_sandbox_pki(directory, **kwargs)
        return self._sandbox_pki


def load_context_settings(
    paths: Paths, config_file: Path | None
) -> tuple[Settings | None, Path | None, str | None]:
    """(settings, file, error): the configuration as ``serve`` would load it."""
    from ..config import ConfigError, load_settings

    file = config_file or paths.config_file
    try:
        return load_settings(file, required=config_file is not None), file, None
    except ConfigError as exc:
        return None, file, str(exc)


DoctorCheck = Callable[[DoctorContext], Awaitable[Iterable[Finding]]]

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
