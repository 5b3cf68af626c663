"""``sidecar doctor`` and the CNS: it names the CNS as the broken link when the CNS is
down, says when credentials are refused, and reads the outbox's age and failures."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web

from sidecar.cns.doctor_checks import check_cns, check_outbox
from sidecar.cns.outbox import Outbox, Status
from sidecar.config import CnsAuth, CnsBaseUrls, CnsSettings, Settings
from tests.fixtures.cns import SimulatorThread
from tests.fixtures.daemon import DaemonProcess, free_port
from tests.test_doctor import by_check, doctor_cli, home_paths, run_checks

UUID_A = "3f2b8c1e-6d4a-4b7e-9c2d-1a5e8f7b6c3d"
UUID_B = "9a1c7e2b-4f3d-4e8a-b6c5-2d9f0e1a3b4c"


def test_doctor_names_the_cns_when_it_is_down(
    tmp_path: Path,
    daemon_factory: Callable[..., DaemonProcess],
    cns_simulator: SimulatorThread,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    config = home / "sidecar.toml"
    config.write_text(
        f'[server]\nport = {port}\n[cns.base_urls]\nsandbox = "{cns_simulator.url}"\n'
    )
    daemon_factory(home, "--config", str(config), port=port)

    up = json.loads(doctor_cli(home, "--json").stdout)
    checks = {c["check"]: c for c in up["checks"]}
    assert checks["cns"]["status"] == "ok", checks["cns"]
    assert checks["cns"]["data"]["url"] == cns_simulator.url
    assert checks["outbox"]["status"] == "ok"

    cns_simulator.stop()  # the CNS goes away; the daemon is still up
    result = doctor_cli(home)
    assert result.returncode == 1
    assert "FAIL  cns" in result.stdout
    assert result.stdout.rstrip().endswith("BROKEN: cns")
    down = json.loads(doctor_cli(home, "--json").stdout)
    assert down["broken"] == ["cns"]
    cns = next(c for c in down["checks"] if c["check"] == "cns")
    assert cns["summary"].startswith(f"the CNS at {cns_simulator.url} cannot be reached")
    assert "firewall" in cns["fix"]


async def test_refused_credentials_and_maintenance(tmp_path: Path) -> None:
    answers = [401, 503]

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=answers.pop(0))

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    token = tmp_path / "token"
    token.write_text("not-the-right-one\n")
    cns = CnsSettings(
        environment="test",
        base_urls=CnsBaseUrls(test=f"http://127.0.0.1:{port}"),
        auth=CnsAuth(mode="bearer", token_file=token),
    )
    kwargs = {
        "paths": home_paths(tmp_path / "home"),
        "settings": Settings(cns=cns),
        "sandbox": False,
    }
    try:
        refused = by_check(await run_checks(kwargs, [("cns", check_cns)]))["cns"]
        maintenance = by_check(await run_checks(kwargs, [("cns", check_cns)]))["cns"]
    finally:
        await runner.cleanup()
    assert refused.status == "fail" and "refuses our credentials (HTTP 401)" in refused.summary
    assert "[cns.auth]" in refused.fix
    assert maintenance.status == "fail" and "HTTP 503" in maintenance.summary

    # The production environment with no address configured is broken, not skipped.
    production = dataclasses.replace(Settings(), cns=CnsSettings(environment="production"))
    report = await run_checks({**kwargs, "settings": production}, [("cns", check_cns)])
    assert by_check(report)["cns"].status == "fail"
    assert "[cns.base_urls] production" in by_check(report)["cns"].fix


async def test_outbox_age_and_failures(tmp_path: Path) -> None:
    paths = home_paths(tmp_path / "home")
    outbox = Outbox(paths.data_dir / "outbox.sqlite3", clock=lambda: time.time() - 7200)
    outbox.enqueue_deposit(UUID_A, b"<a/>", "d1", client="t")  # queued, two hours ago
    outbox.enqueue_deposit(UUID_B, b"<b/>", "d2", client="t")
    outbox.claim(2)
    outbox.finish(UUID_B, Status.FAILED, error="CNS answered 500")
    outbox.close()
    kwargs = {"paths": paths, "settings": Settings(), "sandbox": False}
    found = by_check(await run_checks(kwargs, [("outbox", check_outbox)]))
    assert found["outbox:failed"].status == "warn"
    assert "sidecar outbox retry" in found["outbox:failed"].fix
    pending = found["outbox:pending"]
    assert (
        pending.status == "warn" and pending.summary == "1 message(s) waiting, the oldest for 2.0 h"
    )
    # A day later, still not sent: broken.
    later = {**kwargs, "clock": lambda: datetime.now(UTC) + timedelta(days=1)}
    found = by_check(await run_checks(later, [("outbox", check_outbox)]))
    assert found["outbox:pending"].status == "fail"
