"""The first hour of a new user (issue 13): what the command line says and does when
the home cannot be written, when another installation's daemon holds the port, when
the daemon is degraded; ``config check``, ``verify``'s exit status, ``status``
making no credential, the XML route's profile check, and the smaller papercuts."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from sidecar.cli import main
from sidecar.cns.doctor_checks import check_cns
from sidecar.config import Settings
from sidecar.doctor import DoctorContext, DoctorReport, Finding, run_doctor
from sidecar.doctor.checks import check_daemon, check_permissions, check_sandbox
from sidecar.paths import Paths
from sidecar.runtime import new_runtime, read_runtime, runtime_file, write_runtime
from tests.fixtures.daemon import Api, DaemonProcess, free_port, start_daemon

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "profiles" / "samples"


def sidecar(home: Path, *args: str, user: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SIDECAR_HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("SOFTHSM2_CONF", None)  # the sandbox makes its own token
    return subprocess.run(
        [*(user or []), sys.executable, "-m", "sidecar", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )


def home_paths(home: Path) -> Paths:
    return Paths(config_dir=home, data_dir=home, log_dir=home / "logs")


async def run_checks(paths: Paths, checks: list, **kwargs: object) -> DoctorReport:
    async with aiohttp.ClientSession() as session:
        ctx = DoctorContext(paths=paths, settings=None, sandbox=False, session=session)
        for name, value in kwargs.items():
            setattr(ctx, name, value)
        return await run_doctor(ctx, checks)


def by_check(report: DoctorReport) -> dict[str, Finding]:
    return {f.check: f for f in report.findings}


# --- an unwritable SIDECAR_HOME ---------------------------------------------------------


@pytest.fixture
def unwritable_home() -> Iterator[tuple[Path, list[str]]]:
    """(home, command prefix): a home the command's user can read but not write.

    Root writes anywhere, so as root the command runs as ``nobody`` (setpriv) on a
    root-owned 0755 home; otherwise the home is made read-only (0555)."""
    base = Path(tempfile.mkdtemp(prefix="sidecar-ro-"))
    base.chmod(0o755)
    home = base / "home"
    home.mkdir(mode=0o755)
    (home / "sidecar.toml").write_text(f"[server]\nport = {free_port()}\n")
    (home / "sidecar.toml").chmod(0o644)
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot play another user")
        user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    else:
        home.chmod(0o555)
        user = []
    try:
        yield home, user
    finally:
        home.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize(
    "args",
    [
        ("serve", "--port", str(free_port())),
        ("token", "create", "billing", "--scope", "sign"),
        ("sign", str(SAMPLES / "fee-note.pdf")),
    ],
    ids=["serve", "token-create", "sign"],
)
def test_unwritable_home_is_one_clear_line(
    unwritable_home: tuple[Path, list[str]], args: tuple[str, ...]
) -> None:
    home, user = unwritable_home
    result = sidecar(home, *args, user=user)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "PermissionError" not in result.stderr
    assert f"cannot write to {home}" in lines[0]
    assert "run sidecar as the user who owns it" in lines[0]


def test_doctor_checks_writability(unwritable_home: tuple[Path, list[str]]) -> None:
    home, user = unwritable_home
    result = sidecar(home, "doctor", "--json", user=user)
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert "writable:home" in report["broken"]
    writable = {c["check"]: c for c in report["checks"]}["writable:home"]
    assert str(home) in writable["summary"] and "chown" in writable["fix"]
    assert not list(home.glob(".sidecar-probe-*"))


async def test_doctor_writability_probe_passes_and_leaves_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    from sidecar.doctor.checks import check_writable

    report = await run_checks(home_paths(home), [("writable", check_writable)])
    found = by_check(report)
    assert found["writable:home"].status == "ok"
    # logs/ does not exist yet: its parent (the home) was probed once, not twice.
    assert "writable:log-dir" not in found
    assert list(home.iterdir()) == []


async def test_doctor_private_means_no_group_access(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o755)
    (home / "clients.json").write_text("{}")
    (home / "clients.json").chmod(0o600)
    report = await run_checks(home_paths(home), [("permissions", check_permissions)])
    found = by_check(report)
    directory = found["permissions:config-dir"]
    assert directory.status == "warn"
    assert "is private" not in directory.summary and "0755" in directory.summary
    assert directory.fix == f"chmod go-rwx {home}"
    assert found["permissions:clients"].status == "ok"
    home.chmod(0o700)
    report = await run_checks(home_paths(home), [("permissions", check_permissions)])
    assert by_check(report)["permissions:config-dir"].status == "ok"


# --- doctor and status against real daemons ----------------------------------------------


@pytest.fixture(scope="module")
def own_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A real daemon (no key, no TSA configured: it calls itself degraded)."""
    home = tmp_path_factory.mktemp("own") / "home"
    daemon = start_daemon(home)
    try:
        yield daemon
    finally:
        daemon.stop()


def test_doctor_knows_its_own_daemon(own_daemon: DaemonProcess, tmp_path: Path) -> None:
    runtime = read_runtime(home_paths(own_daemon.home))
    assert runtime is not None and runtime.pid == own_daemon.process.pid
    assert runtime.port == own_daemon.port
    assert runtime_file(home_paths(own_daemon.home)).stat().st_mode & 0o077 == 0
    assert runtime.key not in own_daemon.log_text()

    # Another installation, configured for the port our daemon holds.
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    (other / "sidecar.toml").write_text(f"[server]\nport = {own_daemon.port}\n")
    result = sidecar(other, "doctor", "--json")
    assert result.returncode == 1
    daemon = {c["check"]: c for c in json.loads(result.stdout)["checks"]}["daemon"]
    assert daemon["status"] == "fail"
    assert "not this installation's daemon" in daemon["summary"]
    assert str(other) in daemon["summary"]

    # Its own installation, configured for another port: told where its daemon is.
    (own_daemon.home / "sidecar.toml").write_text(f"[server]\nport = {free_port()}\n")
    try:
        result = sidecar(own_daemon.home, "doctor", "--json")
        daemon = {c["check"]: c for c in json.loads(result.stdout)["checks"]}["daemon"]
        assert daemon["status"] == "fail"
        assert f"--port {own_daemon.port}" in daemon["fix"]
        result = sidecar(own_daemon.home, "doctor", "--json", "--port", str(own_daemon.port))
        daemon = {c["check"]: c for c in json.loads(result.stdout)["checks"]}["daemon"]
        assert daemon["status"] in ("ok", "warn"), daemon
        assert daemon["data"]["pid"] == own_daemon.process.pid
    finally:
        (own_daemon.home / "sidecar.toml").unlink()


def test_doctor_port_and_host_options(own_daemon: DaemonProcess) -> None:
    args = ("doctor", "--json", "--host", "127.0.0.1", "--port", str(own_daemon.port))
    result = sidecar(own_daemon.home, *args)
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["daemon"]["data"]["url"] == f"http://127.0.0.1:{own_daemon.port}/v1/health"
    assert checks["daemon"]["status"] in ("ok", "warn")


def test_doctor_names_the_degraded_parts(own_daemon: DaemonProcess) -> None:
    result = sidecar(own_daemon.home, "doctor", "--json", "--port", str(own_daemon.port))
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["daemon"]["status"] == "warn"
    assert "name the parts" in checks["daemon"]["summary"]
    keys, tsa = checks["daemon:keys"], checks["daemon:tsa"]
    assert (keys["status"], tsa["status"]) == ("warn", "warn")
    assert "no signing key" in keys["summary"] and "[[keys]]" in keys["fix"]
    assert "no TSA" in tsa["summary"] and "[[trust.tsa]]" in tsa["fix"]
    text = sidecar(own_daemon.home, "doctor", "--port", str(own_daemon.port)).stdout
    assert "the checks below name the part" not in text
    summary = text.strip().splitlines()[-1]
    assert "daemon:keys" in summary and "daemon:tsa" in summary, summary


def test_status_creates_no_credentials(own_daemon: DaemonProcess, tmp_path: Path) -> None:
    clients = (own_daemon.home / "clients.json").read_text()
    result = sidecar(own_daemon.home, "status")
    # Run as the daemon's user: every part shown, through the runtime file's key.
    assert result.stdout.startswith("sidecar "), result.stderr
    assert re.search(r"degraded\s+keys\s+no signing key", result.stdout), result.stdout
    assert not (own_daemon.home / "status.token").exists()
    assert (own_daemon.home / "clients.json").read_text() == clients

    # Another installation: the public status only, and how to see more.
    other = tmp_path / "other"
    result = sidecar(other, "status", "--port", str(own_daemon.port))
    assert result.stdout.startswith("sidecar "), result.stderr
    assert "keys" not in result.stdout
    assert "status --open" in result.stderr and "token create" in result.stderr
    assert not other.exists() or list(other.iterdir()) == []


async def test_doctor_does_not_suggest_starting_a_running_sandbox(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    paths = home_paths(home)
    report = await run_checks(paths, [("sandbox", check_sandbox)], sandbox=True)
    assert "sidecar serve --sandbox" in by_check(report)["sandbox"].fix
    # This installation's sandbox daemon runs (this test process plays it).
    write_runtime(
        paths, new_runtime(host="127.0.0.1", port=1, tls=False, sandbox=True, version="x")
    )
    report = await run_checks(paths, [("sandbox", check_sandbox)], sandbox=True)
    fix = by_check(report)["sandbox"].fix
    assert "serve --sandbox" not in fix and f"pid {os.getpid()}" in fix
    # Without --sandbox, the CNS check points at doctor --sandbox, not at starting one.
    report = await run_checks(paths, [("cns", check_cns)], settings=Settings())
    cns = by_check(report)["cns"]
    assert "serve --sandbox" not in cns.summary + cns.fix
    assert "doctor --sandbox" in cns.summary


async def test_doctor_without_runtime_file_does_not_claim_a_daemon(
    tmp_path: Path, own_daemon: DaemonProcess
) -> None:
    from sidecar.config import ServerSettings

    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    settings = Settings(server=ServerSettings(port=own_daemon.port))
    async with aiohttp.ClientSession() as session:
        ctx = DoctorContext(home_paths(home), settings, False, session)
        (finding,) = await check_daemon(ctx)
    assert finding.status == "fail"
    assert "no daemon of this installation" in finding.summary


# --- config check ---------------------------------------------------------------------


def test_config_check_runs_serve_validation(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = home / "sidecar.toml"
    config.write_text('[server]\nhost = "0.0.0.0"\n')
    check = sidecar(home, "config", "check")
    serve = sidecar(home, "serve", "--port", str(free_port()))
    assert check.returncode == serve.returncode == 2, check.stdout + check.stderr
    assert "server.host" in check.stderr and "allow_remote" in check.stderr
    assert check.stderr.strip() == serve.stderr.strip().splitlines()[-1]
    config.write_text('[signing]\nxml_policy_id = "1.2.3"\n')  # no digest: serve refuses
    check = sidecar(home, "config", "check")
    assert check.returncode == 2 and "xml_policy_digest" in check.stderr
    config.write_text("[server]\nport = 7999\n")
    assert sidecar(home, "config", "check").returncode == 0


# --- verify's exit status ----------------------------------------------------------------


@pytest.fixture(scope="module")
def signed_form(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(home, signed fee note): signed by ``sidecar sign --sandbox`` on a free port."""
    home = tmp_path_factory.mktemp("verify-home")
    (home / "sidecar.toml").write_text(
        f"[sandbox]\nport = {free_port()}\ncns_port = {free_port()}\n"
    )
    work = tmp_path_factory.mktemp("verify-work")
    for name in ("fee-note.xml", "fee-note.pdf"):
        shutil.copy(SAMPLES / name, work / name)
    args = ("sign", "--sandbox", "--profile", "fee-note", "--pdf", str(work / "fee-note.pdf"))
    result = sidecar(home, *args, str(work / "fee-note.xml"))
    assert result.returncode == 0, result.stdout + result.stderr
    return home, work / "fee-note.signed.xml"


def test_verify_exit_status_indeterminate(signed_form: tuple[Path, Path], tmp_path: Path) -> None:
    home, signed = signed_form
    result = sidecar(home, "verify", "--sandbox", "--json", str(signed))
    assert result.returncode == 0, result.stdout + result.stderr
    (report,) = json.loads(result.stdout)
    (embedded,) = report["report"]["embedded_pdf"]["signatures"]
    assert (embedded["indication"], embedded["sub_indication"]) == ("INDETERMINATE", "TRY_LATER")
    assert embedded["accepted"] is True and "PAdES-B by design" in embedded["note"]
    text = sidecar(home, "verify", "--sandbox", str(signed))
    assert text.returncode == 0
    assert "(embedded PDF): PAdES B-B INDETERMINATE/TRY_LATER" in text.stdout
    assert "PAdES-B by design" in text.stdout

    # A profile asking B-T of its PDF: the same B-B signature is not what it asks.
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    profile = (ROOT / "profiles" / "fee-note.toml").read_text()
    profile = profile.replace('xsd = "xsd/', f'xsd = "{ROOT}/profiles/xsd/')
    profile = re.sub(r'(?m)^level = "B-B"$', 'level = "B-T"', profile)
    profile = re.sub(r"(?m)^samples = .*$", "", profile)
    (profiles / "fee-note.toml").write_text(profile)
    config = home / "sidecar.toml"
    original = config.read_text()
    config.write_text(original + f'\n[signing]\nprofile_dirs = ["{profiles}"]\n')
    try:
        strict = sidecar(home, "verify", "--sandbox", "--json", str(signed))
    finally:
        config.write_text(original)
    assert strict.returncode == 1, strict.stdout + strict.stderr
    (report,) = json.loads(strict.stdout)
    (embedded,) = report["report"]["embedded_pdf"]["signatures"]
    assert embedded["accepted"] is False and embedded["note"] is None
    assert report["report"]["signatures"][0]["indication"] == "TOTAL_PASSED"


def test_sign_out_dir_is_made(signed_form: tuple[Path, Path], tmp_path: Path) -> None:
    home, _ = signed_form
    pdf = tmp_path / "note.pdf"
    shutil.copy(SAMPLES / "fee-note.pdf", pdf)
    out = tmp_path / "signed" / "today"
    result = sidecar(home, "sign", "--sandbox", "--level", "B-B", "--out", f"{out}/", str(pdf))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "note.signed.pdf").read_bytes().startswith(b"%PDF-")


# --- the XML route's profile check -----------------------------------------------------


async def test_xml_sign_checks_profile_root(sandbox_api: Api) -> None:
    post = sandbox_api.client.post
    headers = {**sandbox_api.auth(), "Content-Type": "application/xml"}
    ecit = (SAMPLES / "ecit.xml").read_bytes()
    answers = {}
    for url in ("/v1/xml/sign?profile=fee-note", "/v1/forms/fee-note/sign"):
        response = await post(url, data=ecit, headers=headers)
        answers[url] = (response.status, await response.json())
    (xml_status, xml_problem), (form_status, form_problem) = answers.values()
    assert xml_status == form_status == 422
    assert xml_problem["code"] == form_problem["code"] == "schema_violation"
    assert (
        "expects {urn:sidecar:standin:cns:fee-note:1}FeeNote"
        in (xml_problem["errors"][0]["message"])
    )

    # Right root, but not valid against the XSD (the empty UUID): every error, as the
    # form route gives them.
    note = (SAMPLES / "fee-note.xml").read_bytes()
    response = await post("/v1/xml/sign?profile=fee-note&level=B-B", data=note, headers=headers)
    problem = await response.json()
    assert response.status == 422 and problem["code"] == "schema_violation", problem
    assert any("UUID" in e["message"] for e in problem["errors"])

    # A complete fee note is signed; without ?profile= nothing is checked against one.
    pdf = base64.b64encode((SAMPLES / "fee-note.pdf").read_bytes())
    complete = note.replace(b"<UUID></UUID>", f"<UUID>{uuid.uuid4()}</UUID>".encode())
    complete = re.sub(
        rb"<Document>\s*</Document>|<Document/>", b"<Document>" + pdf + b"</Document>", complete
    )
    response = await post("/v1/xml/sign?profile=fee-note&level=B-B", data=complete, headers=headers)
    assert response.status == 200, await response.text()
    response = await post("/v1/xml/sign?level=B-B", data=ecit, headers=headers)
    assert response.status == 200, await response.text()


# --- the smaller ones ------------------------------------------------------------------


def test_json_into_head_no_traceback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # Enough clients for `token list --json` to outrun a pipe's buffer (64 KiB).
    clients = {
        f"client-{n:04d}": {"scopes": ["sign"], "created": "2025-01-01T00:00:00+00:00",
                            "token_sha256": "0" * 64}
        for n in range(1500)
    }  # fmt: skip
    (home / "clients.json").write_text(json.dumps({"clients": clients}))
    env = {**os.environ, "SIDECAR_HOME": str(home)}
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "token", "list", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.read(10)  # `head -c 10`, then the reader goes away
    process.stdout.close()
    stderr = process.stderr.read().decode()
    process.wait(timeout=60)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert stderr == ""
    # Through a real shell pipe as well.
    shell = subprocess.run(  # noqa: S602 - the point is the shell's pipe
        f"'{sys.executable}' -m sidecar token list --json | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert shell.stdout == "[\n" and shell.stderr == "", shell.stderr


def test_service_help_no_suppress(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["service", "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert "SUPPRESS" not in shown and "install" in shown
    assert not re.search(r"^\s+run\b", shown, re.M)


@pytest.mark.parametrize("script", ["install.sh", "uninstall.sh"])
def test_install_sh_help(script: str) -> None:
    path = ROOT / "service" / "linux" / script
    result = subprocess.run(["bash", str(path), "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: {script} [OPTIONS]")
    assert not any(line.lstrip().startswith(("#", "set -")) for line in result.stdout.split("\n"))
    options = re.findall(r"^\s+(--[a-z-]+)\)", path.read_text(), re.M)
    assert options and all(option in result.stdout for option in options)


def test_readme_smaller_fixes() -> None:
    readme = (ROOT / "README.md").read_text()
    # `sidecar sign`/`verify` examples: the sandbox's keys and PKI, as the quick start.
    for line in re.findall(r"^sidecar (?:sign|verify|keys) .*$", readme, re.M):
        assert "--sandbox" in line, line
    assert "keys list | " not in readme
    follow = readme[readme.index("deposit it, follow it") :]
    assert "/v1/cns/messages/$UUID" in follow[: follow.index("```\n\n")]
    # The build command the packaging test runs.
    assert ".venv/bin/python -m build --wheel --no-isolation" in readme
    assert "\npython -m build" not in readme
