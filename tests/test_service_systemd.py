"""The systemd unit: systemd-analyze accepts it, and the daemon started the way the unit
starts it (same ExecStart, the unit's directories, a notify socket, a watchdog) says
READY, pings the watchdog, says STOPPING and exits 0 on SIGTERM."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sidecar.service.notify import notify, watchdog_interval
from tests.fixtures.daemon import free_port

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "service" / "systemd" / "sidecar.service"
VENV_SIDECAR = Path(sys.executable).with_name("sidecar")


def unit_for_this_machine(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart's /opt/sidecar pointing at this venv, as install.sh
    rewrites it for --prefix (verify checks that the executable exists)."""
    text = UNIT.read_text() if text is None else text
    venv = Path(sys.executable).parent.parent
    target = tmp_path / "sidecar.service"
    target.write_text(text.replace("/opt/sidecar/", f"{venv}/"))
    return target


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: scripts/setup.sh --test installs the systemd package"
    return subprocess.run(
        [tool, *args],
        capture_output=True,
        text=True,
        timeout=60,
        # No systemd as PID 1 here (a container): verify works offline on the file.
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    result = systemd_analyze("verify", str(unit_for_this_machine(tmp_path)))
    # verify only warns (exit 0) on unknown keys; any output at all is a finding.
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


def test_systemd_analyze_verify_has_teeth(tmp_path: Path) -> None:
    """Control: the same check on a unit with a typo'd key and a bad value complains."""
    broken = UNIT.read_text().replace("ProtectHome=yes", "ProtectHom=yes")
    broken = broken.replace("Type=notify", "Type=notifyy")
    result = systemd_analyze("verify", str(unit_for_this_machine(tmp_path, broken)))
    assert "ProtectHom" in result.stderr and "notifyy" in result.stderr


def test_unit_hardening_and_exposure(tmp_path: Path) -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    expected = {
        "Type": "notify",
        "User": "sidecar",
        "DynamicUser": "no",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "ConfigurationDirectory": "sidecar",
        "StateDirectory": "sidecar",
        "LogsDirectory": "sidecar",
        "StandardError": "journal",
    }
    for key, value in expected.items():
        assert service.get(key) == value, key
    assert int(service["WatchdogSec"]) > 0
    # systemd's own score of the sandbox: 0 (locked down) .. 10 (exposed).
    result = systemd_analyze("security", "--offline=yes", str(unit_for_this_machine(tmp_path)))
    match = re.search(r"Overall exposure level for sidecar\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 3.0, result.stdout


def test_sysusers_file_declares_a_system_user() -> None:
    line = next(
        entry
        for entry in (ROOT / "service/systemd/sidecar.sysusers").read_text().splitlines()
        if entry and not entry.startswith("#")
    )
    kind, name, *_ = shlex.split(line)
    assert (kind, name) == ("u", "sidecar")


def test_notify_and_watchdog_interval(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        assert notify("READY=1", {"NOTIFY_SOCKET": address})
        assert sock.recv(100) == b"READY=1"
    assert not notify("READY=1", {})
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000"}
    assert watchdog_interval(env) == 15.0
    assert watchdog_interval({**env, "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval({**env, "WATCHDOG_PID": "1"}) is None  # another process's
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) is None


def _receive(sock: socket.socket, wanted: bytes, deadline: float) -> list[bytes]:
    seen: list[bytes] = []
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            message = sock.recv(1024)
        except TimeoutError:
            break
        seen.append(message)
        if wanted in message.split(b"\n"):
            return seen
    raise AssertionError(f"no {wanted!r} from the daemon; got {seen}")


def test_daemon_started_like_the_unit_notifies_ready_watchdog_and_stopping(
    tmp_path: Path,
) -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    exec_start = shlex.split(service["ExecStart"])
    assert exec_start[0] == "/opt/sidecar/bin/sidecar"
    command = [str(VENV_SIDECAR), *exec_start[1:]]
    # What systemd sets for this unit: its directories, the unit's Environment=,
    # a notify socket and the watchdog (WatchdogSec=1 here, so pings come quickly).
    dirs = {
        "CONFIGURATION_DIRECTORY": tmp_path / "etc-sidecar",
        "STATE_DIRECTORY": tmp_path / "var-lib-sidecar",
        "LOGS_DIRECTORY": tmp_path / "var-log-sidecar",
    }
    for directory in dirs.values():
        directory.mkdir(mode=0o700)
    port = free_port()
    (dirs["CONFIGURATION_DIRECTORY"] / "sidecar.toml").write_text(f"[server]\nport = {port}\n")
    unit_env = dict(item.split("=", 1) for item in shlex.split(service["Environment"]))
    env = {k: v for k, v in os.environ.items() if k not in ("SIDECAR_HOME", "SIDECAR_SERVICE")}
    env.update(unit_env)
    env.update({k: str(v) for k, v in dirs.items()})
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        env.update({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"})
        process = subprocess.Popen(
            command,
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            seen = _receive(sock, b"READY=1", time.monotonic() + 60)
            # READY means listening: the API answers now, on the configured port.
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=10) as r:
                assert r.status == 200
            seen += _receive(sock, b"WATCHDOG=1", time.monotonic() + 5)
            seen += _receive(sock, b"WATCHDOG=1", time.monotonic() + 5)
            process.send_signal(signal.SIGTERM)
            seen += _receive(sock, b"STOPPING=1", time.monotonic() + 30)
            assert process.wait(30) == 0
        finally:
            if process.poll() is None:
                process.kill()
            stderr = process.communicate()[1]
    assert seen.index(b"READY=1") < seen.index(b"STOPPING=1")
    # The unit's directories were used: first-start token in CONFIGURATION_DIRECTORY.
    token = dirs["CONFIGURATION_DIRECTORY"] / "default.token"
    assert token.stat().st_mode & 0o077 == 0
    assert "Traceback" not in stderr and "stopped" in stderr


@pytest.mark.parametrize("script", ["install.sh", "uninstall.sh"])
def test_scripts_parse(script: str) -> None:
    result = subprocess.run(
        ["bash", "-n", str(ROOT / "service" / "linux" / script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
