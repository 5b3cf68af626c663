"""The wheel: built with ``python -m build``, installed in a fresh venv, it runs, carries
its data files, and ``sidecar doctor --json`` from it checks a sandbox daemon. The
Linux installer installs it into an image root, and re-running it with a newer wheel
(an upgrade) keeps configuration, tokens and SQLite stores."""

from __future__ import annotations

import gettext
import importlib.metadata
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from sidecar import __version__
from sidecar.migrations import Migration, migrate, schema_version
from tests.fixtures.daemon import DaemonProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "constraints.txt")
DATA_DIRS = ("profiles", "certs", "service")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "node_modules")


def copy_source(target: Path) -> Path:
    """The files a build reads, copied so the build leaves nothing in the checkout."""
    target.mkdir(parents=True)
    for name in SOURCES:
        shutil.copy2(ROOT / name, target / name)
    for name in ("sidecar", *DATA_DIRS):
        shutil.copytree(ROOT / name, target / name, ignore=IGNORE)
    return target


def build_wheel(source: Path, outdir: Path) -> Path:
    # --no-isolation: the build backend comes from the test extras, no download.
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(outdir)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = outdir.glob("sidecar-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("build")
    return build_wheel(copy_source(base / "src"), base / "dist")


def fresh_venv(directory: Path) -> Path:
    """A new venv from the base interpreter. Dependencies come from this test venv
    through a .pth line (a path, so its editable-install hooks are not run): the
    wheel itself is the only sidecar in it."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(directory)], check=True, timeout=120)
    python = directory / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "sidecar-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def pip_install(python: Path, wheel: Path) -> None:
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr


def test_wheel_carries_the_data_files(wheel: Path) -> None:
    assert wheel.name == f"sidecar-{__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"sidecar/data/{path.relative_to(ROOT).as_posix()}"
        for name in DATA_DIRS
        for path in (ROOT / name).rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and not any(p.startswith(".") for p in path.relative_to(ROOT).parts)
    }
    assert expected and expected <= names, sorted(expected - names)
    assert "sidecar/data/service/systemd/sidecar.service" in names
    assert any(n.startswith("sidecar/data/profiles/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "sidecar = sidecar.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    # The catalogs, compiled: each .po of the checkout has its .mo in the wheel, and it loads.
    catalogs = list((ROOT / "sidecar" / "i18n" / "locale").glob("*/LC_MESSAGES/*.po"))
    assert len(catalogs) >= 4
    for po in catalogs:
        mo = po.relative_to(ROOT).with_suffix(".mo").as_posix()
        assert mo in names, mo
    french = gettext.GNUTranslations(
        io.BytesIO(zipfile.ZipFile(wheel).read("sidecar/i18n/locale/fr/LC_MESSAGES/sidecar.mo"))
    )
    assert french.gettext("Forbidden") == "Interdit"


def read_pins(text: str) -> dict[str, str]:
    """``name==version`` lines of a constraints file, by canonical name."""
    pins = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_wheel_carries_the_constraints_ci_tested(wheel: Path) -> None:
    carried = zipfile.ZipFile(wheel).read("sidecar/data/constraints.txt").decode()
    assert carried == (ROOT / "constraints.txt").read_text()


def test_constraints_pin_what_ci_runs_within_the_declared_bounds() -> None:
    """Every package of the test environment is pinned at the version installed here
    (so CI runs exactly the lock), and every runtime dependency's pin lies within the
    bounds pyproject.toml declares. A dependency added without `scripts/lock.sh`
    fails here."""
    pins = read_pins((ROOT / "constraints.txt").read_text())
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
    }
    unlocked = {
        name: version
        for name, version in installed.items()
        if name not in {"sidecar", "pip", "setuptools", "wheel"} and pins.get(name) != version
    }
    assert not unlocked, f"installed but not pinned at that version: {unlocked}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned"
        assert requirement.specifier.contains(pins[name]), (text, pins[name])
        assert any(spec.operator == "<" for spec in requirement.specifier), (
            f"{text}: no tested upper bound"
        )


def test_installer_installs_with_the_wheels_constraints(tmp_path: Path) -> None:
    """install.sh hands the wheel's constraints to pip: a wheel whose lock excludes its
    own version cannot be installed (pip names the conflict)."""
    source = copy_source(tmp_path / "src")
    lock = source / "constraints.txt"
    lock.write_text(lock.read_text() + "sidecar==0.0.0\n")
    conflicting = build_wheel(source, tmp_path / "dist")
    root = tmp_path / "image"
    root.mkdir()
    fresh_venv(root / "opt" / "sidecar")
    result = install_sh(root, conflicting)
    assert result.returncode != 0
    assert "sidecar==0.0.0" in result.stderr or "conflict" in result.stderr.lower(), result.stderr


def test_wheel_installs_and_runs_doctor_against_a_sandbox_daemon(
    wheel: Path, tmp_path: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    python = fresh_venv(tmp_path / "venv")
    pip_install(python, wheel)
    sidecar = tmp_path / "venv" / "bin" / "sidecar"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SIDECAR_HOME")}
    version = subprocess.run(
        [str(sidecar), "--version"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert version.stdout.strip() == f"sidecar {__version__}", version.stderr
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import sidecar, sidecar.data as d; print(sidecar.__file__); "
            "print(d.resource_dir('profiles')); print(d.resource_dir('service'))",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=True,
    ).stdout.split()
    assert all(line.startswith(str(tmp_path / "venv")) for line in where), where

    home = tmp_path / "home"
    home.mkdir()
    config = home / "sidecar.toml"
    port = free_port()
    config.write_text(f"[server]\nport = {port}\n[sandbox]\nport = {free_port()}\n")
    daemon_factory(home, "--sandbox", "--config", str(config), port=port)
    doctor = subprocess.run(
        [str(sidecar), "doctor", "--json", "--sandbox", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**env, "SIDECAR_HOME": str(home)},
    )
    report = json.loads(doctor.stdout)
    assert doctor.returncode == 0 and report["broken"] == [], doctor.stdout + doctor.stderr
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["daemon"]["data"]["version"] == __version__
    assert checks["tsa:sandbox"]["status"] == "ok"
    assert checks["clock"]["status"] == "ok"


OLD_SCHEMA = [Migration(1, "outbox", "CREATE TABLE outbox (uuid TEXT PRIMARY KEY, body BLOB);")]
NEW_SCHEMA = [
    *OLD_SCHEMA,
    Migration(2, "attempts", "ALTER TABLE outbox ADD COLUMN attempts INTEGER DEFAULT 0;"),
]


def install_sh(root: Path, wheel: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "bash",
            str(ROOT / "service/linux/install.sh"),
            "--root",
            str(root),
            "--wheel",
            str(wheel),
            "--pip-args",
            "--no-deps --no-index",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_installer_upgrade_keeps_configuration_tokens_and_stores(
    wheel: Path, tmp_path: Path
) -> None:
    root = tmp_path / "image"
    root.mkdir()
    # The venv install.sh would create, made here so dependencies come from this venv.
    fresh_venv(root / "opt" / "sidecar")
    first = install_sh(root, wheel)
    assert first.returncode == 0, first.stderr
    assert f"installed sidecar {__version__}" in first.stderr
    unit = (root / "etc/systemd/system/sidecar.service").read_text()
    assert "ExecStart=/opt/sidecar/bin/sidecar serve" in unit
    assert any(line.startswith("sidecar:") for line in (root / "etc/passwd").read_text().split())
    assert (root / "etc/systemd/system/multi-user.target.wants/sidecar.service").is_symlink()
    assert os.access(root / "usr/local/sbin/sidecarctl", os.X_OK)

    # What a running installation accumulates: a config, a client with its token, a store.
    sidecar = root / "opt/sidecar/bin/sidecar"
    service_env = {
        **{k: v for k, v in os.environ.items() if k != "SIDECAR_HOME"},
        "CONFIGURATION_DIRECTORY": str(root / "etc/sidecar"),
        "STATE_DIRECTORY": str(root / "var/lib/sidecar"),
        "LOGS_DIRECTORY": str(root / "var/log/sidecar"),
    }
    port = free_port()
    (root / "etc/sidecar/sidecar.toml").write_text(f"[server]\nport = {port}\n")
    created = subprocess.run(
        [str(sidecar), "token", "create", "billing", "--scope", "sign"],
        capture_output=True,
        text=True,
        env=service_env,
        check=True,
    )
    token = created.stdout.strip()
    store = root / "var/lib/sidecar/outbox.sqlite"
    with sqlite3.connect(store) as db:
        migrate(db, OLD_SCHEMA, store="outbox")
        db.execute("INSERT INTO outbox VALUES ('u-1', x'3c782f3e')")
    before = {p: p.read_bytes() for p in (root / "etc/sidecar").iterdir()}

    # The next release: same project, newer version.
    source = copy_source(tmp_path / "src-next")
    init = source / "sidecar" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{__version__}"', f'"{__version__}.post1"'))
    newer = build_wheel(source, tmp_path / "dist-next")
    second = install_sh(root, newer)
    assert second.returncode == 0, second.stderr
    assert f"installed sidecar {__version__}.post1" in second.stderr

    assert {p: p.read_bytes() for p in (root / "etc/sidecar").iterdir()} == before
    assert all(p.stat().st_mode & 0o077 == 0 for p in before)
    with sqlite3.connect(store) as db:
        result = migrate(db, NEW_SCHEMA, store="outbox")  # what the store does at open
        assert (result.from_version, result.applied) == (1, (2,))
        assert db.execute("SELECT uuid, attempts FROM outbox").fetchall() == [("u-1", 0)]
        assert schema_version(db) == 2
    # The new version starts on the old data, and the old token still works.
    process = subprocess.Popen(
        [str(sidecar), "serve"],
        env=service_env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/uuids",
                headers={"Authorization": f"Bearer {token}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=5) as r:
            assert json.loads(r.read())["version"] == f"{__version__}.post1"
    finally:
        process.terminate()
        assert process.wait(30) == 0

    removed = subprocess.run(
        ["bash", str(ROOT / "service/linux/uninstall.sh"), "--root", str(root)],
        capture_output=True,
        text=True,
    )
    assert removed.returncode == 0, removed.stderr
    assert not (root / "opt/sidecar").exists()
    assert (root / "etc/sidecar/default.token").exists() or (
        root / "etc/sidecar/clients.json"
    ).exists()


def test_unit_documentation_is_installed(wheel: Path, tmp_path: Path) -> None:
    """The unit's ``Documentation=`` names a file that install.sh puts there."""
    root = tmp_path / "image"
    root.mkdir()
    fresh_venv(root / "opt" / "sidecar")
    result = install_sh(root, wheel)
    assert result.returncode == 0, result.stderr
    unit = (root / "etc/systemd/system/sidecar.service").read_text()
    (documentation,) = [
        line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("Documentation=")
    ]
    assert documentation.startswith("file:///")
    installed = root / documentation.removeprefix("file:///")
    assert installed.is_file(), documentation
    assert "systemd" in installed.read_text()
