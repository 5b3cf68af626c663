"""The service-manager interface behind ``sidecar service ...`` and what it registers.

What a service *is* (name, command line, account, start type, recovery actions,
environment) is worked out here in plain Python (:func:`windows_spec`), so it is
tested on any machine. Registering it is the job of a :class:`ServiceManager`:
:class:`~sidecar.service.windows.WindowsServiceManager` (pywin32, Windows only),
:class:`SystemdServiceManager` (systemctl and service/linux/install.sh), or a fake
in the tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

__all__ = [
    "DEFAULT_RECOVERY",
    "SERVICE_NAME",
    "VIRTUAL_ACCOUNT",
    "RecoveryAction",
    "ServiceError",
    "ServiceManager",
    "ServiceSpec",
    "ServiceState",
    "ServiceStatus",
    "SystemdServiceManager",
    "default_manager",
    "service_command_line",
    "windows_spec",
]

SERVICE_NAME = "sidecar"
#: A virtual account: no password to manage, its own SID for ACLs, network access
#: as the machine account. Created by Windows with the service.
VIRTUAL_ACCOUNT = rf"NT SERVICE\{SERVICE_NAME}"

StartType = Literal["auto-delayed", "auto", "demand", "disabled"]
ServiceState = Literal[
    "not-installed", "stopped", "start-pending", "running", "stop-pending", "unknown"
]


class ServiceError(Exception):
    """A service operation that failed; the message says what to do."""


@dataclass(frozen=True)
class RecoveryAction:
    """What the service manager does after the n-th failure."""

    action: Literal["restart", "none", "reboot"]
    delay_seconds: int = 0


#: Restart after 5 s, then 30 s, then every 2 min; the count resets after a day.
DEFAULT_RECOVERY = (
    RecoveryAction("restart", 5),
    RecoveryAction("restart", 30),
    RecoveryAction("restart", 120),
)


@dataclass(frozen=True)
class ServiceSpec:
    """Everything a service manager needs to register sidecar."""

    command: tuple[str, ...]
    name: str = SERVICE_NAME
    display_name: str = "sidecar signing daemon"
    description: str = (
        "Signs and timestamps CNS standardized forms for local practice software "
        "(http://127.0.0.1:7420)."
    )
    #: ``None``: LocalSystem. The default virtual account needs no password.
    account: str | None = VIRTUAL_ACCOUNT
    start: StartType = "auto-delayed"
    recovery: tuple[RecoveryAction, ...] = DEFAULT_RECOVERY
    recovery_reset_seconds: int = 86400
    #: Also apply the recovery actions when the service stops with a non-zero exit
    #: code, not only when its process crashes.
    recovery_on_error_exit: bool = True
    environment: Mapping[str, str] = field(default_factory=dict)
    event_log_source: str = SERVICE_NAME

    @property
    def command_line(self) -> str:
        """The command line as the service manager stores it (Windows quoting)."""
        return subprocess.list2cmdline(self.command)


@dataclass(frozen=True)
class ServiceStatus:
    state: ServiceState
    pid: int | None = None
    detail: str = ""


class ServiceManager(Protocol):
    """Register, control and query the sidecar service."""

    def install(self, spec: ServiceSpec) -> None: ...

    def uninstall(self, name: str) -> None: ...

    def start(self, name: str) -> None: ...

    def stop(self, name: str) -> None: ...

    def status(self, name: str) -> ServiceStatus: ...


def _venv_site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def service_command_line(
    *,
    config_file: Path | None = None,
    executable: str | None = None,
    frozen: bool | None = None,
    in_venv: bool | None = None,
    base_executable: str | None = None,
) -> tuple[tuple[str, ...], dict[str, str]]:
    """The command the service manager starts, and the environment it needs.

    - A frozen build (PyInstaller and the like: ``sys.frozen``) registers itself:
      ``sidecar.exe service run``.
    - Otherwise ``python.exe -m sidecar service run``. In a virtual environment the
      venv's ``python.exe`` is only a launcher that starts the base interpreter as a
      child process, which the Windows service control manager would not recognise
      as the service; so the base interpreter is registered, with ``PYTHONPATH``
      naming the venv's site-packages.
    """
    frozen = bool(getattr(sys, "frozen", False)) if frozen is None else frozen
    executable = executable or sys.executable
    in_venv = (sys.prefix != sys.base_prefix) if in_venv is None else in_venv
    environment = {"SIDECAR_SERVICE": "1"}
    if frozen:
        command: list[str] = [executable, "service", "run"]
    else:
        python = executable
        if in_venv:
            python = base_executable or str(getattr(sys, "_base_executable", executable))
            environment["PYTHONPATH"] = _venv_site_packages()
        command = [python, "-m", "sidecar", "service", "run"]
    if config_file is not None:
        command += ["--config", str(Path(config_file).absolute())]
    return tuple(command), environment


def windows_spec(
    *,
    config_file: Path | None = None,
    account: str | None = VIRTUAL_ACCOUNT,
    start: StartType = "auto-delayed",
    **command_options: object,
) -> ServiceSpec:
    """The Windows service as ``sidecar service install`` registers it."""
    command, environment = service_command_line(
        config_file=config_file,
        **command_options,  # type: ignore[arg-type]
    )
    return ServiceSpec(command=command, account=account, start=start, environment=environment)


Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


def _run(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, check=False)


class SystemdServiceManager:
    """Linux: install with service/linux/install.sh, control with systemctl."""

    def __init__(self, runner: Runner = _run, install_script: Path | None = None) -> None:
        self._run = runner
        self._install_script = install_script

    def _script(self, name: str) -> Path:
        from ..data import resource_dir

        if self._install_script is not None:
            return self._install_script.with_name(name)
        return resource_dir("service") / "linux" / name

    def _check(self, command: Sequence[str]) -> subprocess.CompletedProcess[str]:
        result = self._run(command)
        if result.returncode != 0:
            raise ServiceError(
                f"{' '.join(command)} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result

    def install(self, spec: ServiceSpec) -> None:
        # The unit runs the sidecar of this very environment (sys.prefix/bin/sidecar).
        if sys.prefix == sys.base_prefix:
            raise ServiceError(
                "install sidecar in a virtual environment first (install.sh makes one "
                "in /opt/sidecar: bash service/linux/install.sh --wheel FILE)"
            )
        self._check(["bash", str(self._script("install.sh")), "--prefix", sys.prefix])

    def uninstall(self, name: str) -> None:
        self._check(["bash", str(self._script("uninstall.sh"))])

    def start(self, name: str) -> None:
        self._check(["systemctl", "start", f"{name}.service"])

    def stop(self, name: str) -> None:
        self._check(["systemctl", "stop", f"{name}.service"])

    def status(self, name: str) -> ServiceStatus:
        result = self._run(
            ["systemctl", "show", f"{name}.service", "--property=LoadState,ActiveState,MainPID"]
        )
        if result.returncode != 0:
            return ServiceStatus("unknown", detail=result.stderr.strip())
        props = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        if props.get("LoadState") == "not-found":
            return ServiceStatus("not-installed")
        states: dict[str, ServiceState] = {
            "active": "running",
            "reloading": "running",
            "inactive": "stopped",
            "failed": "stopped",
            "activating": "start-pending",
            "deactivating": "stop-pending",
        }
        state = states.get(props.get("ActiveState", ""), "unknown")
        pid = int(props.get("MainPID") or 0) or None
        return ServiceStatus(state, pid, props.get("ActiveState", ""))


def default_manager() -> ServiceManager:
    """The service manager of this operating system."""
    if sys.platform == "win32":
        from .windows import WindowsServiceManager

        return WindowsServiceManager()
    if os.path.isdir("/run/systemd/system") or sys.platform.startswith("linux"):
        return SystemdServiceManager()
    raise ServiceError(f"no service manager support on {sys.platform}; run 'sidecar serve'")
