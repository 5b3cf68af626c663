"""``scripts/sandbox.sh`` sets up only when setup's recipe changed, and quietly.

The scripts run for real in a copy of the tree; only the virtualenv's ``python`` and
``sidecar`` are stand-ins that record their calls (a real ``pip install`` takes seconds
and is run by ``test_readme_sandbox_command_serves_health_and_pki``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_tree(root: Path) -> Path:
    (root / "scripts").mkdir(parents=True)
    for name in ("scripts/sandbox.sh", "scripts/setup.sh", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    venv_bin = root / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    calls = root / "calls.log"
    for tool, says in (("python", "pip chatter"), ("sidecar", "serving")):
        stub = venv_bin / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\necho "{says}"\n')
        stub.chmod(0o755)
    return root


def sandbox_sh(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(tree / "scripts" / "sandbox.sh"), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SIDECAR_HOME": str(tree / "home")},
        check=True,
    )


def calls(tree: Path) -> list[str]:
    return (tree / "calls.log").read_text().splitlines()


def test_sandbox_sh_skips_setup_when_unchanged(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    first = sandbox_sh(tree)
    pip_runs = [call for call in calls(tree) if "pip install" in call]
    assert pip_runs, calls(tree)  # the first start sets up
    assert "pip chatter" not in first.stdout + first.stderr  # into var/setup.log
    assert "pip chatter" in (tree / "var" / "setup.log").read_text()

    again = sandbox_sh(tree)
    assert [call for call in calls(tree) if "pip install" in call] == pip_runs
    assert calls(tree)[-1] == "sidecar serve --sandbox --port 1"
    assert again.stderr.splitlines() == [
        f"sandbox home: {tree / 'home'} (token in {tree / 'home'}/default.token)"
    ]

    # A changed recipe (a new dependency) sets up again.
    with (tree / "pyproject.toml").open("a") as pyproject:
        pyproject.write("\n# changed\n")
    sandbox_sh(tree)
    assert len([call for call in calls(tree) if "pip install" in call]) > len(pip_runs)


def test_sandbox_sh_shows_a_failed_setup(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    python = tree / ".venv" / "bin" / "python"
    python.write_text('#!/bin/sh\necho "ERROR: no matching distribution for lxml" >&2\nexit 1\n')
    result = subprocess.run(
        ["bash", str(tree / "scripts" / "sandbox.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SIDECAR_HOME": str(tree / "home")},
    )
    assert result.returncode == 1
    assert "no matching distribution for lxml" in result.stderr
    assert "sandbox: setup failed (whole log in var/setup.log)" in result.stderr
    assert not (tree / ".venv" / ".setup-stamp").exists()
