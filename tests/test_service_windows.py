"""The Windows service without Windows: the service class's life driven by a fake
service control manager, and the registration ``sidecar service install`` asks for.

What is not run here (no Windows on CI): the pywin32 calls themselves
(sidecar/service/windows.py: CreateService, ChangeServiceConfig2, the Event Log
handler, icacls, StartServiceCtrlDispatcher).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

import sidecar.server
from sidecar.config import ServerSettings, Settings
from sidecar.logs import register_secret
from sidecar.paths import Paths
from sidecar.service.commands import add_service_parser, service_command
from sidecar.service.host import ServiceHost
from sidecar.service.manager import (
    DEFAULT_RECOVERY,
    VIRTUAL_ACCOUNT,
    ServiceSpec,
    ServiceStatus,
    service_command_line,
    windows_spec,
)
from sidecar.service.windows import program_data_acl_command
from tests.fixtures.daemon import free_port


@dataclass
class FakeSCM:
    """Records what the service reports, as SetServiceStatus would receive it."""

    reports: list[tuple[str, int, int]] = field(default_factory=list)
    running = threading.Event()

    def __post_init__(self) -> None:
        self.running = threading.Event()

    def report(self, state: str, *, wait_hint_ms: int = 0, exit_code: int = 0) -> None:
        self.reports.append((state, wait_hint_ms, exit_code))
        if state == "running":
            self.running.set()

    @property
    def states(self) -> list[str]:
        return [state for state, _, _ in self.reports]


@dataclass
class FakeServiceManager:
    """A ServiceManager that keeps the registered services in a dict."""

    services: dict[str, ServiceSpec] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    def install(self, spec: ServiceSpec) -> None:
        self.calls.append("install")
        self.services[spec.name] = spec

    def uninstall(self, name: str) -> None:
        self.calls.append("uninstall")
        del self.services[name]

    def start(self, name: str) -> None:
        self.calls.append("start")
        assert name in self.services
        self.running.add(name)

    def stop(self, name: str) -> None:
        self.calls.append("stop")
        self.running.discard(name)

    def status(self, name: str) -> ServiceStatus:
        if name not in self.services:
            return ServiceStatus("not-installed")
        return ServiceStatus("running" if name in self.running else "stopped", pid=4242)


def make_host(tmp_path: Path, scm: FakeSCM, **settings: object) -> tuple[ServiceHost, int]:
    port = free_port()
    home = tmp_path / "ProgramData-sidecar"
    paths = Paths(config_dir=home, data_dir=home, log_dir=home / "logs")
    config = Settings(server=ServerSettings(port=port, **settings))  # type: ignore[arg-type]
    return ServiceHost(config, paths, scm), port


def start_in_thread(host: ServiceHost) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(host.run()), name="SvcDoRun")
    thread.start()
    return thread, result


def test_start_then_stop_reports_each_state(tmp_path: Path) -> None:
    scm = FakeSCM()
    host, port = make_host(tmp_path, scm)
    thread, result = start_in_thread(host)
    assert scm.running.wait(60), scm.reports
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=10) as r:
        assert r.status == 200
    host.stop()  # SvcStop, from the SCM's thread
    thread.join(60)
    assert result == [0]
    assert scm.states == ["start-pending", "running", "stop-pending", "stopped"]
    # The stop wait hint covers the drain: shutdown_timeout (30 s) and a margin.
    assert scm.reports[2][1] >= 30_000
    assert (tmp_path / "ProgramData-sidecar" / "default.token").exists()


def test_stop_during_work_lets_the_request_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered = threading.Event()
    real_create_app = sidecar.server.create_app

    def create_app(*args: object, **kwargs: object) -> web.Application:
        app = real_create_app(*args, **kwargs)  # type: ignore[arg-type]

        async def slow(request: web.Request) -> web.Response:
            entered.set()
            await asyncio.sleep(1.5)
            return web.json_response({"done": True})

        app.router.add_get("/test/slow", slow)
        return app

    # A test route on the real app: no product route is slow on demand.
    monkeypatch.setattr(sidecar.server, "create_app", create_app)
    scm = FakeSCM()
    host, port = make_host(tmp_path, scm)
    thread, result = start_in_thread(host)
    assert scm.running.wait(60)
    answer: dict[str, object] = {}

    def call() -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/test/slow", timeout=30) as r:
            answer["status"], answer["body"] = r.status, json.loads(r.read())

    client = threading.Thread(target=call)
    client.start()
    assert entered.wait(30)
    host.stop()
    client.join(30)
    thread.join(60)
    assert answer == {"status": 200, "body": {"done": True}}
    assert result == [0] and scm.states[-2:] == ["stop-pending", "stopped"]


def test_stop_before_the_loop_runs_still_stops(tmp_path: Path) -> None:
    scm = FakeSCM()
    host, _ = make_host(tmp_path, scm)
    host.stop()
    thread, result = start_in_thread(host)
    thread.join(60)
    assert result == [0] and scm.states[-1] == "stopped"


def test_start_failure_reports_stopped_with_an_exit_code(tmp_path: Path) -> None:
    scm = FakeSCM()
    # A non-loopback address without TLS: refused at start (a ConfigError).
    host, _ = make_host(tmp_path, scm, host="192.0.2.1")
    thread, result = start_in_thread(host)
    thread.join(60)
    assert result == [2]
    assert scm.reports[-1] == ("stopped", 0, 2)  # non-zero: recovery actions apply
    assert "running" not in scm.states


def test_service_log_file_rotates_and_masks_secrets(tmp_path: Path) -> None:
    scm = FakeSCM()
    host, _ = make_host(tmp_path, scm)
    extra: list[logging.Handler] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            extra.append(record)  # type: ignore[arg-type]

    host._extra_handlers = lambda formatter: [Collect(level=logging.WARNING)]
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        host.configure_logging()
        secret = "pin-1234-secret-value"
        register_secret(secret)
        logging.getLogger("sidecar.test").warning("token is %s", secret)
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    text = (tmp_path / "ProgramData-sidecar" / "logs" / "sidecar.log").read_text()
    assert "token is [redacted]" in text and secret not in text
    assert len(extra) == 1  # the Event Log stand-in got the warning


def test_registered_command_line_in_a_venv_uses_the_base_interpreter(tmp_path: Path) -> None:
    command, env = service_command_line(
        config_file=Path(r"C:\ProgramData\sidecar\sidecar.toml"),
        executable=r"C:\Program Files\Vendor\venv\Scripts\python.exe",
        base_executable=r"C:\Program Files\Python311\python.exe",
        in_venv=True,
        frozen=False,
    )
    assert command[:5] == (
        r"C:\Program Files\Python311\python.exe",
        "-m",
        "sidecar",
        "service",
        "run",
    )
    assert command[5] == "--config"
    assert env["SIDECAR_SERVICE"] == "1" and "PYTHONPATH" in env
    spec = ServiceSpec(command=command, environment=env)
    # Quoted the way the SCM parses ImagePath: the path with a space stays one argument.
    assert spec.command_line.startswith('"C:\\Program Files\\Python311\\python.exe" -m sidecar')


def test_registered_command_line_of_a_frozen_build() -> None:
    command, env = service_command_line(
        executable=r"C:\Program Files\sidecar\sidecar.exe", frozen=True, in_venv=False
    )
    assert command == (r"C:\Program Files\sidecar\sidecar.exe", "service", "run")
    assert env == {"SIDECAR_SERVICE": "1"}


def test_default_registration() -> None:
    spec = windows_spec(in_venv=False, frozen=False, executable=r"C:\Python311\python.exe")
    assert spec.name == "sidecar"
    assert spec.account == VIRTUAL_ACCOUNT == r"NT SERVICE\sidecar"
    assert spec.start == "auto-delayed"
    assert spec.recovery == DEFAULT_RECOVERY
    assert [a.action for a in spec.recovery] == ["restart", "restart", "restart"]
    assert spec.recovery_on_error_exit and spec.recovery_reset_seconds == 86400
    assert spec.event_log_source == "sidecar"


def test_program_data_acl_is_private_to_the_service() -> None:
    command = program_data_acl_command(Path(r"C:\ProgramData\sidecar"), VIRTUAL_ACCOUNT)
    assert "/inheritance:r" in command  # Users lose their inherited read access
    assert r"NT SERVICE\sidecar:(OI)(CI)M" in command
    assert not any("Users" in part or "S-1-5-32-545" in part for part in command)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sidecar")
    add_service_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["service", *argv])


def test_service_commands_drive_the_manager(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = Paths(tmp_path, tmp_path, tmp_path / "logs")
    manager = FakeServiceManager()
    config = tmp_path / "sidecar.toml"
    config.write_text("[server]\nport = 7500\n")
    assert service_command(parse("install", "--config", str(config)), paths, manager=manager) == 0
    spec = manager.services["sidecar"]
    assert spec.account == VIRTUAL_ACCOUNT and spec.start == "auto-delayed"
    assert spec.command[-2:] == ("--config", str(config))
    assert manager.calls == ["install", "start"]
    out = capsys.readouterr()
    assert "installed" in out.err
    assert service_command(parse("status", "--json"), paths, manager=manager) == 0
    assert json.loads(capsys.readouterr().out) == {
        "name": "sidecar",
        "state": "running",
        "pid": 4242,
        "detail": "",
    }
    assert service_command(parse("stop"), paths, manager=manager) == 0
    assert service_command(parse("status"), paths, manager=manager) == 3  # LSB: not running
    assert service_command(parse("uninstall"), paths, manager=manager) == 0
    assert manager.services == {}
    assert service_command(parse("status"), paths, manager=manager) == 3


def test_install_refuses_a_broken_config_before_registering(tmp_path: Path) -> None:
    paths = Paths(tmp_path, tmp_path, tmp_path / "logs")
    manager = FakeServiceManager()
    config = tmp_path / "sidecar.toml"
    config.write_text("[server]\nprot = 1\n")
    from sidecar.config import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'port'"):
        service_command(parse("install", "--config", str(config)), paths, manager=manager)
    assert manager.calls == []


def test_install_options(tmp_path: Path) -> None:
    paths = Paths(tmp_path, tmp_path, tmp_path / "logs")
    manager = FakeServiceManager()
    args = parse("install", "--account", "LocalSystem", "--start-type", "demand", "--no-start")
    assert service_command(args, paths, manager=manager) == 0
    spec = manager.services["sidecar"]
    assert spec.account is None and spec.start == "demand"
    assert manager.calls == ["install"]


def test_service_run_is_refused_off_windows(tmp_path: Path) -> None:
    paths = Paths(tmp_path, tmp_path, tmp_path / "logs")
    assert service_command(parse("run"), paths, manager=FakeServiceManager()) == 1
