"""The runnable client examples (examples/) against a real ``sidecar serve --sandbox``.

Each must go the whole way (token, UUIDs, signed fee note, deposit, delivered, PID
simulation) and exit 0; and exit non-zero, saying why, when the daemon refuses it.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.daemon import DaemonProcess, free_port, start_daemon

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

#: How each runnable example is started; the base URL and token file are appended.
COMMANDS = {
    "curl": ["bash", str(EXAMPLES / "curl" / "example.sh")],
    "python": ["python3", str(EXAMPLES / "python" / "example.py")],
    "java": ["java", str(EXAMPLES / "java" / "Example.java")],
    "node": ["node", str(EXAMPLES / "node" / "example.mjs")],
}
STEPS = [f"{n}. " for n in range(1, 8)]


@pytest.fixture(scope="module")
def sandbox_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One sandbox daemon for all the examples (what daemon_factory starts, module-wide:
    a sandbox start costs seconds and each example makes its own UUIDs)."""
    home = tmp_path_factory.mktemp("examples") / "home"
    home.mkdir()
    # Free ports for the sandbox PKI and CNS simulator: other daemons may run meanwhile.
    (home / "sidecar.toml").write_text(
        f"[sandbox]\nport = {free_port()}\ncns_port = {free_port()}\n", encoding="utf-8"
    )
    daemon = start_daemon(home, "--sandbox")
    yield daemon
    daemon.stop()


def run_example(
    language: str, daemon: DaemonProcess, token_file: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMANDS[language], daemon.base_url, str(token_file)],
        cwd=REPO,
        env={**daemon.env, "SIDECAR_WAIT_SECONDS": "60"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def get_json(daemon: DaemonProcess, path: str) -> dict[str, object]:
    request = urllib.request.Request(
        daemon.base_url + path, headers={"Authorization": f"Bearer {daemon.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("language", sorted(COMMANDS))
def test_example_delivers_a_signed_fee_note(language: str, sandbox_daemon: DaemonProcess) -> None:
    result = run_example(language, sandbox_daemon, sandbox_daemon.home / "default.token")
    report = f"{language} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, report
    lines = result.stdout.splitlines()
    for step in STEPS:
        assert any(line.startswith(step) for line in lines), f"no step {step!r}\n{report}"
    done = re.fullmatch(r"done: fee note ([0-9a-f-]{36}) delivered", lines[-1])
    assert done, report
    # The daemon agrees, independently of what the example printed.
    message = get_json(sandbox_daemon, f"/v1/cns/messages/{done.group(1)}")
    assert message["status"] == "delivered", message
    assert message["operation"] == "deposit"
    assert message["level"] == "B-LT", message
    assert "<PidSimulationAnswer" in result.stdout or "Simulation" in result.stdout, report


@pytest.mark.parametrize("language", sorted(COMMANDS))
def test_example_fails_loudly_on_a_refused_token(
    language: str, sandbox_daemon: DaemonProcess, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token\n", encoding="utf-8")
    result = run_example(language, sandbox_daemon, wrong)
    assert result.returncode != 0, result.stdout
    assert "FAILED" in result.stderr and "401" in result.stderr, result.stderr
    assert "not-the-token" not in result.stdout + result.stderr
    assert not result.stdout.rstrip().endswith("delivered")
