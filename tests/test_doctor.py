"""``sidecar doctor`` names the broken link: against real daemons, the served sandbox
PKI (TSA, OCSP) and files with wrong modes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

import sidecar.doctor
from sidecar.config import ServerSettings, Settings
from sidecar.doctor import (
    DoctorContext,
    DoctorReport,
    Finding,
    load_context_settings,
    run_doctor,
)
from sidecar.doctor.checks import check_config, check_daemon, check_permissions, check_sandbox
from sidecar.doctor.cli import render_table
from sidecar.doctor.probes import load_pem_certificates
from sidecar.i18n import format_date
from sidecar.paths import Paths
from sidecar.sandbox.pki import SandboxPKI
from tests.fixtures.daemon import DaemonProcess, free_port


def home_paths(home: Path) -> Paths:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Paths(config_dir=home, data_dir=home, log_dir=home / "logs")


def doctor_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SIDECAR_HOME": str(home)},
    )


async def run_checks(ctx_kwargs: dict, checks: list) -> DoctorReport:
    async with aiohttp.ClientSession() as session:
        ctx = DoctorContext(session=session, **ctx_kwargs)
        return await run_doctor(ctx, checks)


def by_check(report: DoctorReport) -> dict[str, Finding]:
    return {f.check: f for f in report.findings}


def test_healthy_install_against_a_running_daemon(
    tmp_path: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    home = tmp_path / "home"
    port = free_port()
    home.mkdir()
    (home / "sidecar.toml").write_text(f"[server]\nport = {port}\n")
    daemon = daemon_factory(home, "--config", str(home / "sidecar.toml"), port=port)
    result = doctor_cli(home, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["broken"] == []
    checks = {c["check"]: c for c in report["checks"]}
    # Without keys or a TSA configured the daemon may call itself degraded: a warning.
    health = checks["daemon"]["data"]["status"]
    assert (health, checks["daemon"]["status"]) in (("ok", "ok"), ("degraded", "warn"))
    assert checks["permissions:token"]["status"] == "ok"
    assert checks["permissions:clients"]["status"] == "ok"
    assert checks["disk"]["data"]["free_bytes"] > 0
    daemon.stop()


def test_daemon_down_is_named_with_what_to_do(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "sidecar.toml").write_text(f"[server]\nport = {free_port()}\n")
    result = doctor_cli(home)
    assert result.returncode == 1
    assert "FAIL  daemon" in result.stdout and "nothing listens on 127.0.0.1" in result.stdout
    assert "systemctl start sidecar" in result.stdout
    assert result.stdout.rstrip().endswith("BROKEN: daemon")


def test_broken_configuration(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "sidecar.toml").write_text("[server]\nprot = 7420\n")
    result = doctor_cli(home, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    config = next(c for c in report["checks"] if c["check"] == "config")
    assert config["status"] == "fail" and "did you mean 'port'" in config["summary"]
    assert "config" in report["broken"]


async def test_secrets_readable_by_others_are_named(tmp_path: Path) -> None:
    paths = home_paths(tmp_path / "home")
    paths.default_token_file.write_text("t0ken\n")
    paths.default_token_file.chmod(0o644)
    paths.clients_file.write_text("{}")
    paths.clients_file.chmod(0o600)
    config = paths.config_file
    # A key whose name says it holds a secret makes the file itself secret.
    config.write_text('[keys]\npassphrase = "hunter22"\n')
    config.chmod(0o644)
    settings, file, error = load_context_settings(paths, None)
    report = await run_checks(
        {
            "paths": paths,
            "settings": settings,
            "sandbox": False,
            "config_file": file,
            "config_error": error,
        },
        [("permissions", check_permissions)],
    )
    found = by_check(report)
    assert found["permissions:token"].status == "fail"
    assert "readable by others" in found["permissions:token"].summary
    assert found["permissions:token"].fix == f"chmod 600 {paths.default_token_file}"
    assert found["permissions:config"].status == "fail"
    assert found["permissions:clients"].status == "ok"
    paths.config_dir.chmod(0o777)
    report = await run_checks(
        {"paths": paths, "settings": settings, "sandbox": False, "config_file": file},
        [("permissions", check_permissions)],
    )
    assert "can be changed by others" in by_check(report)["permissions:config-dir"].summary
    paths.config_dir.chmod(0o700)


async def sandbox_report(
    tmp_path: Path, pki: SandboxPKI, clock: Callable[[], datetime] | None = None
) -> DoctorReport:
    kwargs: dict = {
        "paths": home_paths(tmp_path / "home"),
        "settings": Settings(),
        "sandbox": True,
        "_sandbox_pki": pki,
        "timeout": 5.0,
    }
    if clock is not None:
        kwargs["clock"] = clock
    return await run_checks(kwargs, [("sandbox", check_sandbox)])


async def test_sandbox_all_good(tmp_path: Path, sandbox_services: SandboxPKI) -> None:
    report = await sandbox_report(tmp_path, sandbox_services)
    found = by_check(report)
    assert report.broken == [], render_table(report)
    assert (
        found["tsa:sandbox"].status == "ok" and "timestamp granted" in found["tsa:sandbox"].summary
    )
    assert found["clock"].status == "ok"
    assert found["ocsp:sandbox-rsa"].summary == "OCSP responder says good"
    assert found["certificate:sandbox-ec"].status == "ok"


async def test_tsa_down(tmp_path: Path, sandbox_services: SandboxPKI) -> None:
    dead = f"http://127.0.0.1:{free_port()}/sandbox/tsa/tsa"
    report = await sandbox_report(tmp_path, dataclasses.replace(sandbox_services, tsa_url=dead))
    found = by_check(report)
    assert found["tsa:sandbox"].status == "fail"
    assert found["tsa:sandbox"].summary.startswith("TSA unreachable: cannot connect to " + dead)
    assert [f.check for f in report.broken] == ["tsa:sandbox"]  # OCSP still fine
    assert "BROKEN: tsa:sandbox" in render_table(report)


async def test_ocsp_down(
    tmp_path: Path, sandbox_services: SandboxPKI, make_sandbox_pki: Callable[..., SandboxPKI]
) -> None:
    # A second PKI nobody serves: its certificates point at OCSP responders that are
    # down; its TSA (URL and the roots its tokens chain to) is replaced by the live one,
    # so only OCSP is broken.
    unserved = make_sandbox_pki()
    pki = dataclasses.replace(
        unserved, tsa_url=sandbox_services.tsa_url, roots_pem=sandbox_services.roots_pem
    )
    report = await sandbox_report(tmp_path, pki)
    broken = {f.check for f in report.broken}
    assert broken == {"ocsp:sandbox-rsa", "ocsp:sandbox-ec"}
    finding = by_check(report)["ocsp:sandbox-rsa"]
    assert finding.summary.startswith("OCSP responder unreachable")
    assert finding.data["url"].startswith(unserved.base_url)


async def test_clock_ten_minutes_off(tmp_path: Path, sandbox_services: SandboxPKI) -> None:
    # The machine's clock cannot be changed by a test: the doctor's clock is shifted.
    report = await sandbox_report(
        tmp_path, sandbox_services, clock=lambda: datetime.now(UTC) + timedelta(minutes=10)
    )
    clock = by_check(report)["clock"]
    assert clock.status == "fail"
    assert clock.summary == "this machine's clock is 10 min ahead of the TSA's"
    assert "timedatectl set-ntp true" in clock.fix
    assert 590 <= clock.data["skew_seconds"] <= 610


async def test_certificate_expiring_in_ten_days(
    tmp_path: Path, sandbox_services: SandboxPKI
) -> None:
    signer = sandbox_services.signers["sandbox-rsa"]
    (certificate,) = load_pem_certificates(signer.cert_pem.read_bytes())
    not_after = certificate["tbs_certificate"]["validity"]["not_after"].native
    # The certificate's own dates are fixed by the sandbox: move the clock instead.
    report = await sandbox_report(
        tmp_path, sandbox_services, clock=lambda: not_after - timedelta(days=10)
    )
    finding = by_check(report)["certificate:sandbox-rsa"]
    assert finding.status == "fail"
    assert finding.summary == f"certificate expires in 10 days ({format_date(not_after)})"
    assert "renewal" in finding.fix and finding.data["days_left"] == 10
    # 20 days out: worth a warning, not yet broken.
    report = await sandbox_report(
        tmp_path, sandbox_services, clock=lambda: not_after - timedelta(days=20)
    )
    assert by_check(report)["certificate:sandbox-rsa"].status == "warn"


async def test_no_sandbox_generated(tmp_path: Path) -> None:
    paths = home_paths(tmp_path / "home")
    report = await run_checks(
        {"paths": paths, "settings": Settings(), "sandbox": True}, [("sandbox", check_sandbox)]
    )
    assert by_check(report)["sandbox"].fix == "run the sandbox daemon: sidecar serve --sandbox"


async def test_port_taken_by_something_else(tmp_path: Path) -> None:
    from aiohttp import web

    async def other(request: web.Request) -> web.Response:
        return web.Response(text="<html>not sidecar</html>")

    app = web.Application()
    app.router.add_get("/v1/health", other)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        settings = Settings(server=ServerSettings(port=port))
        report = await run_checks(
            {"paths": home_paths(tmp_path / "h"), "settings": settings, "sandbox": False},
            [("daemon", check_daemon)],
        )
    finally:
        await runner.cleanup()
    daemon = by_check(report)["daemon"]
    assert daemon.status == "fail" and "not as sidecar" in daemon.summary


async def test_a_crashing_or_hanging_check_does_not_hide_the_others(tmp_path: Path) -> None:
    async def crash(ctx: DoctorContext) -> list[Finding]:
        raise RuntimeError("boom")

    async def hang(ctx: DoctorContext) -> list[Finding]:
        await asyncio.Event().wait()
        return []

    paths = home_paths(tmp_path / "home")
    async with aiohttp.ClientSession() as session:
        ctx = DoctorContext(paths=paths, settings=Settings(), sandbox=False, session=session)
        report = await run_doctor(
            ctx,
            [("crash", crash), ("hang", hang), ("config", check_config)],
            per_check_seconds=0.5,
        )
    found = by_check(report)
    assert found["crash"].summary == "the check itself failed: RuntimeError: boom"
    assert "did not finish" in found["hang"].summary
    assert found["config"].status == "ok"
    assert report.exit_code == 1


def test_subsystem_plugins_are_found_by_module_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "plugpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "doctor.py").write_text(
        "from sidecar.doctor import Finding\n"
        "async def cns(ctx):\n"
        "    return [Finding('cns', 'fail', 'CNS unreachable', fix='check the proxy')]\n"
        "DOCTOR_CHECKS = [('cns', cns)]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        sidecar.doctor, "PLUGIN_MODULES", ("plugpkg.doctor", "sidecar.notbuiltyet.doctor")
    )
    names = [name for name, _ in sidecar.doctor.all_checks()]
    assert names[-1] == "cns" and "config" in names


async def test_key_locked_and_tsa_down_from_the_configuration(
    tmp_path: Path, sandbox_services: SandboxPKI
) -> None:
    from sidecar.config import TrustSettings, TsaSettings
    from sidecar.doctor.subsystems import check_keys, check_tsas
    from sidecar.keys import KeyConfig

    signer = sandbox_services.signers["sandbox-rsa"]
    keys = (
        KeyConfig(
            id="dr-locked",
            backend="pkcs12",
            path=signer.p12,
            passphrase_source="config",
            passphrase="not-the-passphrase",
        ),
        KeyConfig(
            id="dr-ok",
            backend="pkcs12",
            path=signer.p12,
            passphrase_source="config",
            passphrase=signer.p12_passphrase,
        ),
    )
    dead = f"http://127.0.0.1:{free_port()}/tsa"
    trust = TrustSettings(
        anchors=(sandbox_services.roots_pem,),  # as the daemon needs to accept its tokens
        tsa=(
            TsaSettings(url=sandbox_services.tsa_url),
            TsaSettings(url=dead.replace("127.0.0.1", "localhost")),
        ),
    )
    settings = dataclasses.replace(Settings(), keys=keys, trust=trust)
    report = await run_checks(
        {"paths": home_paths(tmp_path / "home"), "settings": settings, "sandbox": False},
        [("keys", check_keys), ("tsa", check_tsas)],
    )
    found = by_check(report)
    locked = found["key:dr-locked"]
    assert locked.status == "fail" and locked.summary.startswith("key is locked: passphrase")
    assert "passphrase" in locked.fix
    assert found["key:dr-ok"].status == "ok"
    assert found["tsa:127.0.0.1"].status == "ok" and found["clock:127.0.0.1"].status == "ok"
    assert found["tsa:localhost"].status == "fail"
    assert found["tsa:localhost"].summary.startswith("TSA unreachable")
    assert {f.check for f in report.broken} == {"key:dr-locked", "tsa:localhost"}
