"""``sidecar serve`` and ``sidecar token`` as a sysadmin and an installer run them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.fixtures.daemon import DaemonProcess


def get(daemon: DaemonProcess, path: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(daemon.base_url + path)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SIDECAR_HOME": str(home)},
    )


def test_first_start_writes_private_token_and_stops_cleanly(
    tmp_path: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    daemon = daemon_factory(tmp_path / "home")
    token_file = daemon.home / "default.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((daemon.home / "clients.json").stat().st_mode) == 0o600
    token = daemon.token
    assert len(token) >= 40
    assert token not in (daemon.home / "clients.json").read_text()  # only its hash
    status, body = get(daemon, "/v1/uuids?count=3", token)
    assert status == 200 and len(body["uuids"]) == 3
    assert daemon.stop() == 0
    log = daemon.log_text()
    assert "listening on http://127.0.0.1" in log and "stopped" in log
    assert token not in log
    assert "Traceback" not in log


def test_second_start_keeps_the_token(
    tmp_path: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    first = daemon_factory(tmp_path / "home")
    token = first.token
    assert first.stop() == 0
    second = daemon_factory(tmp_path / "home")
    assert second.token == token
    assert get(second, "/v1/uuids", token)[0] == 200


def test_json_lines_logs(tmp_path: Path, daemon_factory: Callable[..., DaemonProcess]) -> None:
    config = tmp_path / "sidecar.toml"
    config.write_text('[log]\nformat = "json"\n')
    daemon = daemon_factory(tmp_path / "home", "--config", str(config))
    get(daemon, "/v1/uuids", daemon.token)
    get(daemon, "/v1/uuids", "wrong-token")
    assert daemon.stop() == 0
    entries = [json.loads(line) for line in daemon.log_text().splitlines() if line.strip()]
    access = [e for e in entries if e["logger"] == "sidecar.access"]
    assert {e["message"] for e in access} >= {"GET /v1/uuids 200", "GET /v1/uuids 401"}
    assert all("request_id" in e for e in access)
    assert daemon.token not in daemon.log_text()
    assert "wrong-token" not in daemon.log_text()


def test_token_commands(tmp_path: Path, daemon_factory: Callable[..., DaemonProcess]) -> None:
    daemon = daemon_factory(tmp_path / "home")
    created = cli(daemon.home, "token", "create", "billing", "--scope", "sign,verify")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    # The running daemon picks up the new client without a restart.
    assert get(daemon, "/v1/uuids", token)[0] == 200
    listed = cli(daemon.home, "token", "list", "--json")
    clients = {c["name"]: c for c in json.loads(listed.stdout)}
    assert clients["billing"]["scopes"] == ["sign", "verify"]
    assert set(clients["default"]["scopes"]) == {"sign", "timestamp", "forward", "verify"}
    assert token not in listed.stdout
    duplicate = cli(daemon.home, "token", "create", "billing", "--scope", "sign")
    assert duplicate.returncode == 2 and "exists" in duplicate.stderr
    bad_scope = cli(daemon.home, "token", "create", "x", "--scope", "root")
    assert bad_scope.returncode == 2 and "unknown scope" in bad_scope.stderr
    revoked = cli(daemon.home, "token", "revoke", "billing")
    assert revoked.returncode == 0
    assert get(daemon, "/v1/uuids", token)[0] == 401
    assert token not in daemon.log_text()


def test_version_flag() -> None:
    from sidecar import __version__

    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "--version"], capture_output=True, text=True
    )
    assert result.stdout.strip() == f"sidecar {__version__}"


def test_port_in_use_is_a_clear_error(
    tmp_path: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    daemon = daemon_factory(tmp_path / "a")
    result = cli(tmp_path / "b", "serve", "--port", str(daemon.port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{daemon.port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_readme_sandbox_command_serves_health_and_pki(tmp_path: Path) -> None:
    """The README's first command, as a new user runs it (ports moved off the defaults)."""
    from tests.fixtures.daemon import free_port

    home = tmp_path / "home"
    home.mkdir()
    sandbox_port = free_port()
    (home / "sidecar.toml").write_text(f"[sandbox]\nport = {sandbox_port}\n")
    port = free_port()
    repo = Path(__file__).resolve().parents[1]
    log = (tmp_path / "sandbox.log").open("wb")
    process = subprocess.Popen(
        ["bash", str(repo / "scripts" / "sandbox.sh"), "--port", str(port)],
        env={**os.environ, "SIDECAR_HOME": str(home)},
        stdout=log,
        stderr=log,
    )
    daemon = DaemonProcess(home, port, process, tmp_path / "sandbox.log")
    try:
        status = None
        for _ in range(120 * 4):  # the first start installs and generates the PKI
            assert process.poll() is None, daemon.log_text()
            try:
                status, body = get(daemon, "/v1/health")
                break
            except OSError:
                time.sleep(0.25)
        assert status == 200 and body["status"] == "ok", daemon.log_text()
        roots = home / "sandbox" / "roots.pem"
        assert roots.read_text().startswith("-----BEGIN CERTIFICATE-----")
        admin = cli(home, "token", "create", "ops", "--scope", "admin").stdout.strip()
        _, health = get(daemon, "/v1/health", admin)
        assert {c["name"]: c["status"] for c in health["checks"]}["sandbox-pki"] == "ok"
        crl_url = f"http://127.0.0.1:{sandbox_port}/sandbox/crls/root/latest.crl"
        with urllib.request.urlopen(crl_url, timeout=10) as response:
            crl = response.read()
        parsed = subprocess.run(
            ["openssl", "crl", "-inform", "DER", "-noout", "-issuer"],
            input=crl,
            capture_output=True,
        )
        assert parsed.returncode == 0 and b"issuer=" in parsed.stdout
    finally:
        assert daemon.stop() == 0
