"""Sandbox ports: taken free at first generation, recorded, and a clash is one clear line.

Real ``sidecar serve --sandbox`` processes; a port is "taken" by a plain listening
socket in the test process, as a developer's other program would hold it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecar.sandbox import SandboxPKI, ensure_sandbox_pki
from tests.conftest import FIXED_PORTS
from tests.fixtures.daemon import DaemonProcess, free_port

#: What a start that went wrong must never print.
NOISE = ("Traceback", "athrow()", "aclose()", "OSError", "Task was destroyed", "Errno")


def serve(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``sidecar serve --sandbox`` expected to fail (so it returns)."""
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "serve", "--sandbox", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "SIDECAR_HOME": str(home)},
    )


def hold(port: int) -> socket.socket:
    """Take *port* as another program would (listening, so it is plainly in use)."""
    sock = socket.socket()
    # Listening, it blocks every other bind; SO_REUSEADDR only lets it bind over the
    # TIME_WAIT connections an earlier test's daemon left on that port.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("sidecar:")]


@pytest.fixture(scope="module")
def generated_sandbox(tmp_path_factory: pytest.TempPathFactory) -> SandboxPKI:
    """A sandbox generated once with the defaults (free ports); tests copy its directory."""
    return ensure_sandbox_pki(tmp_path_factory.mktemp("generated") / "sandbox")


@pytest.fixture
def home(tmp_path: Path, generated_sandbox: SandboxPKI) -> Iterator[Path]:
    """A SIDECAR_HOME holding a copy of :func:`generated_sandbox` (same ports)."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(generated_sandbox.directory, home / "sandbox")
    # Without the SoftHSM token: not what these tests are about, and it costs a second.
    (home / "sidecar.toml").write_text("[sandbox]\nsofthsm = false\n")
    yield home


def test_sandbox_takes_free_ports_and_records_them(generated_sandbox: SandboxPKI) -> None:
    pki = generated_sandbox
    meta = json.loads((pki.directory / "sandbox.json").read_text())
    assert (meta["port"], meta["cns_port"]) == (pki.port, pki.cns_port)
    assert pki.port != pki.cns_port
    assert not {pki.port, pki.cns_port} & set(FIXED_PORTS)
    assert pki.tsa_url.startswith(f"http://127.0.0.1:{pki.port}/")
    # A later start keeps them (the certificates name the PKI's); a configured CNS
    # port wins over the recorded one, since nothing names the simulator's address.
    again = ensure_sandbox_pki(pki.directory)
    assert (again.port, again.cns_port) == (pki.port, pki.cns_port)
    assert ensure_sandbox_pki(pki.directory, cns_port=4242).cns_port == 4242


def test_sandbox_made_before_ports_were_recorded_gets_a_cns_port(
    tmp_path: Path, generated_sandbox: SandboxPKI
) -> None:
    directory = tmp_path / "old"
    shutil.copytree(generated_sandbox.directory, directory)
    meta = json.loads((directory / "sandbox.json").read_text())
    del meta["cns_port"]
    (directory / "sandbox.json").write_text(json.dumps(meta))
    pki = ensure_sandbox_pki(directory)
    assert pki.cns_port not in (0, pki.port, *FIXED_PORTS)
    assert json.loads((directory / "sandbox.json").read_text())["cns_port"] == pki.cns_port


@pytest.mark.parametrize("which", ["pki", "cns", "daemon"])
def test_sandbox_port_taken_is_one_clear_line(
    home: Path, generated_sandbox: SandboxPKI, which: str
) -> None:
    daemon_port = free_port()
    port = {"pki": generated_sandbox.port, "cns": generated_sandbox.cns_port}.get(
        which, daemon_port
    )
    with hold(port):
        result = serve(home, "--port", str(daemon_port))
    assert result.returncode == 1, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert f"127.0.0.1:{port}: the port is taken" in line, line
    assert not [word for word in NOISE if word in result.stderr], result.stderr
    # What to do, right for the case: the PKI's port is in its certificates, so
    # regenerating moves it; the simulator's and the daemon's are settings.
    if which == "pki":
        assert f"delete {home / 'sandbox'}" in line and "another program" in line, line
    elif which == "cns":
        assert "[sandbox] cns_port" in line and "delete" not in line, line
    else:
        assert "--port" in line and "delete" not in line, line


def test_same_sandbox_twice_says_it_is_already_served(
    home: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    daemon_factory(home, "--sandbox")
    result = serve(home, "--port", str(free_port()))
    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "already serves this same sandbox" in lines[0], lines[0]
    assert "delete" not in lines[0], lines[0]  # it would break the running one
    assert not [word for word in NOISE if word in result.stderr], result.stderr


def test_failed_start_has_no_athrow_error(home: Path, generated_sandbox: SandboxPKI) -> None:
    """The simulator's port is bound last, after keys, trust, signing and the worker
    pools started: the failure must unwind all of them in order, quietly."""
    with hold(generated_sandbox.cns_port):
        result = serve(home, "--port", str(free_port()))
    assert result.returncode == 1
    assert "athrow()" not in result.stderr and "aclose()" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "sidecar.signing: signing:" in result.stderr  # the subsystems had started
    assert len(error_lines(result.stderr)) == 1, result.stderr


def admin_health(daemon: DaemonProcess) -> dict[str, str]:
    made = subprocess.run(
        [sys.executable, "-m", "sidecar", "token", "create", "ops", "--scope", "admin"],
        capture_output=True,
        text=True,
        timeout=60,
        env=daemon.env,
        check=True,
    )
    request = urllib.request.Request(
        daemon.base_url + "/v1/health",
        headers={"Authorization": f"Bearer {made.stdout.strip()}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    return {check["name"]: check["status"] for check in body["checks"]}


def test_two_sandboxes_coexist(
    tmp_path: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """Two ``serve --sandbox`` with different homes and no configuration at all (only
    the daemon's own port differs, as it must): both start and pass their checks."""
    first = daemon_factory(tmp_path / "one", "--sandbox")
    second = daemon_factory(tmp_path / "two", "--sandbox")
    recorded = [
        json.loads((d.home / "sandbox" / "sandbox.json").read_text()) for d in (first, second)
    ]
    ports = [port for meta in recorded for port in (meta["port"], meta["cns_port"])]
    assert len(set(ports)) == 4, ports
    for daemon in (first, second):
        checks = admin_health(daemon)
        assert checks["sandbox-pki"] == "ok", checks
        assert checks["cns"] == "ok", checks
    for daemon in (first, second):
        assert daemon.stop() == 0


def test_suite_runs_with_fixed_ports_held(hold_fixed_ports: dict[int, socket.socket]) -> None:
    """The conftest holds 7420-7422 (or something else already does): no test can
    take them, so none can depend on them. The ports this run holds must refuse a bind;
    one that something else held at the start (another test run on the machine) and has
    let go since is held now, as the conftest would have."""
    for port in FIXED_PORTS:
        if port not in hold_fixed_ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()  # still held by its other owner
                continue
            hold_fixed_ports[port] = sock
        with socket.socket() as probe, pytest.raises(OSError):
            probe.bind(("127.0.0.1", port))
