"""What a doctor check is given and gives back: :class:`DoctorContext`, :class:`Finding`.

Apart from :mod:`sidecar.doctor` (which runs the checks) so that the checks and probes
import these without importing the package that imports them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
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

__all__ = ["DoctorCheck", "DoctorContext", "Finding", "Status", "load_context_settings"]

Status = Literal["ok", "warn", "fail", "skip"]


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
