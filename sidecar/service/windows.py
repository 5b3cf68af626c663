"""The Windows service: pywin32 glue, kept small because Linux CI cannot run it.

Everything that can be decided without Windows is elsewhere and tested:
:func:`~sidecar.service.manager.windows_spec` (command line, account, start type,
recovery, environment) and :class:`~sidecar.service.host.ServiceHost` (start,
report running, drain on stop). This module only translates them into Win32 calls.
pywin32 is imported inside the functions, so importing this module elsewhere is safe.

Registered service: ``sidecar``, account ``NT SERVICE\\sidecar`` (virtual account),
start type automatic (delayed), recovery: restart after 5 s / 30 s / 2 min, reset
after a day, also on a non-zero exit. Logs: ``%ProgramData%\\sidecar\\logs\\
sidecar.log`` (rotating) and warnings and errors in the Application Event Log
(source ``sidecar``).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .host import ReportedState, ServiceHost
from .manager import ServiceError, ServiceSpec, ServiceStatus

__all__ = ["WindowsServiceManager", "dispatch", "program_data_acl_command"]

log = logging.getLogger("sidecar.service")


def program_data_acl_command(directory: Path, account: str | None) -> list[str]:
    """``icacls`` that makes the data directory private to SYSTEM, Administrators and the
    service account (secrets live there: tokens, keys' PIN references, the outbox)."""
    command = [
        "icacls",
        str(directory),
        "/inheritance:r",
        "/grant:r",
        "*S-1-5-18:(OI)(CI)F",  # SYSTEM
        "/grant:r",
        "*S-1-5-32-544:(OI)(CI)F",  # BUILTIN\Administrators
    ]
    if account:
        command += ["/grant:r", f"{account}:(OI)(CI)M"]
    return command


class WindowsServiceManager:
    """:class:`~sidecar.service.manager.ServiceManager` on the Win32 service API."""

    def __init__(self) -> None:
        if sys.platform != "win32":
            raise ServiceError("the Windows service manager only runs on Windows")
        try:
            import win32service  # noqa: F401
        except ImportError:
            raise ServiceError("pywin32 is missing: pip install 'sidecar[windows]'") from None

    def install(self, spec: ServiceSpec) -> None:
        import win32evtlogutil
        import win32service

        start = {
            "auto-delayed": win32service.SERVICE_AUTO_START,
            "auto": win32service.SERVICE_AUTO_START,
            "demand": win32service.SERVICE_DEMAND_START,
            "disabled": win32service.SERVICE_DISABLED,
        }[spec.start]
        scm = win32service.OpenSCManager(None, None, win32service.SC_MANAGER_ALL_ACCESS)
        try:
            handle = win32service.CreateService(
                scm,
                spec.name,
                spec.display_name,
                win32service.SERVICE_ALL_ACCESS,
                win32service.SERVICE_WIN32_OWN_PROCESS,
                start,
                win32service.SERVICE_ERROR_NORMAL,
                spec.command_line,
                None,
                0,
                None,
                spec.account,
                None,  # a virtual account has no password
            )
            try:
                win32service.ChangeServiceConfig2(
                    handle, win32service.SERVICE_CONFIG_DESCRIPTION, spec.description
                )
                win32service.ChangeServiceConfig2(
                    handle,
                    win32service.SERVICE_CONFIG_DELAYED_AUTO_START_INFO,
                    spec.start == "auto-delayed",
                )
                kinds = {
                    "restart": win32service.SC_ACTION_RESTART,
                    "reboot": win32service.SC_ACTION_REBOOT,
                    "none": win32service.SC_ACTION_NONE,
                }
                win32service.ChangeServiceConfig2(
                    handle,
                    win32service.SERVICE_CONFIG_FAILURE_ACTIONS,
                    {
                        "ResetPeriod": spec.recovery_reset_seconds,
                        "RebootMsg": None,
                        "Command": None,
                        "Actions": [
                            (kinds[a.action], a.delay_seconds * 1000) for a in spec.recovery
                        ],
                    },
                )
                win32service.ChangeServiceConfig2(
                    handle,
                    win32service.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG,
                    spec.recovery_on_error_exit,
                )
            finally:
                win32service.CloseServiceHandle(handle)
        finally:
            win32service.CloseServiceHandle(scm)
        # The service's own environment block (REG_MULTI_SZ "Environment").
        if spec.environment and sys.platform == "win32":
            import winreg

            key = winreg.OpenKey(
                winreg.HKEY_LOCAL_MACHINE,
                rf"SYSTEM\CurrentControlSet\Services\{spec.name}",
                0,
                winreg.KEY_SET_VALUE,
            )
            with key:
                winreg.SetValueEx(
                    key,
                    "Environment",
                    0,
                    winreg.REG_MULTI_SZ,
                    [f"{k}={v}" for k, v in spec.environment.items()],
                )
        import servicemanager

        win32evtlogutil.AddSourceToRegistry(
            spec.event_log_source, servicemanager.__file__, "Application"
        )
        from ..paths import resolve_paths

        paths = resolve_paths({**os.environ, **spec.environment})
        paths.ensure()
        subprocess.run(program_data_acl_command(paths.data_dir, spec.account), check=True)

    def uninstall(self, name: str) -> None:
        import win32serviceutil

        win32serviceutil.RemoveService(name)

    def start(self, name: str) -> None:
        import win32serviceutil

        win32serviceutil.StartService(name)
        win32serviceutil.WaitForServiceStatus(name, 4, 90)  # SERVICE_RUNNING

    def stop(self, name: str) -> None:
        import win32serviceutil

        win32serviceutil.StopService(name)

    def status(self, name: str) -> ServiceStatus:
        import pywintypes
        import win32service
        import win32serviceutil

        try:
            raw = win32serviceutil.QueryServiceStatus(name)
        except pywintypes.error as exc:
            if exc.winerror == 1060:  # ERROR_SERVICE_DOES_NOT_EXIST
                return ServiceStatus("not-installed")
            raise ServiceError(f"cannot query the service {name}: {exc.strerror}") from None
        states = {
            win32service.SERVICE_STOPPED: "stopped",
            win32service.SERVICE_START_PENDING: "start-pending",
            win32service.SERVICE_STOP_PENDING: "stop-pending",
            win32service.SERVICE_RUNNING: "running",
        }
        return ServiceStatus(states.get(raw[1], "unknown"))  # type: ignore[arg-type]


class _Win32Reporter:
    """SetServiceStatus through pywin32's ServiceFramework."""

    def __init__(self, framework: Any) -> None:
        self._framework = framework

    def report(self, state: ReportedState, *, wait_hint_ms: int = 0, exit_code: int = 0) -> None:
        import win32service

        code = {
            "start-pending": win32service.SERVICE_START_PENDING,
            "running": win32service.SERVICE_RUNNING,
            "stop-pending": win32service.SERVICE_STOP_PENDING,
            "stopped": win32service.SERVICE_STOPPED,
        }[state]
        if state == "stopped" and exit_code:
            # ServiceFramework reports STOPPED itself when SvcDoRun returns; a non-zero
            # service-specific exit code is what triggers the recovery actions.
            self._framework.ReportServiceStatus(code, win32ExitCode=1066, svcExitCode=exit_code)
        elif state != "stopped":
            self._framework.ReportServiceStatus(code, waitHint=wait_hint_ms)


def _service_class(config_file: Path | None) -> type:
    import servicemanager
    import win32serviceutil

    from ..paths import resolve_paths
    from .commands import load_service_settings

    class SidecarService(win32serviceutil.ServiceFramework):  # type: ignore[misc]
        _svc_name_ = "sidecar"
        _svc_display_name_ = "sidecar signing daemon"

        def __init__(self, args: Any) -> None:
            super().__init__(args)
            paths = resolve_paths()
            settings = load_service_settings(paths, config_file)

            def event_log(formatter: logging.Formatter | None) -> list[logging.Handler]:
                handler = logging.handlers.NTEventLogHandler("sidecar")
                handler.setLevel(logging.WARNING)
                if formatter is not None:
                    handler.setFormatter(formatter)
                return [handler]

            self.host = ServiceHost(settings, paths, _Win32Reporter(self), extra_handlers=event_log)
            self.host.configure_logging()

        def SvcDoRun(self) -> None:  # pywin32's name
            servicemanager.LogInfoMsg("sidecar starting")
            self.host.run()

        def SvcStop(self) -> None:  # pywin32's name
            self.host.stop()

    return SidecarService


def dispatch(config_file: Path | None) -> int:
    """``sidecar service run``: hand this process to the service control manager."""
    import servicemanager

    servicemanager.Initialize()
    servicemanager.PrepareToHostSingle(_service_class(config_file))
    servicemanager.StartServiceCtrlDispatcher()
    return 0
