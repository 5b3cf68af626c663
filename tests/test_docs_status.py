"""The status page (/) and the API reference (/docs) in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sidecar import __version__
from sidecar.clients import Scope
from sidecar.i18n import format_date, format_relative, web_messages
from tests.fixtures.browser import Browser, Page
from tests.fixtures.daemon import Api, DaemonProcess, free_port

STORAGE_KEY = "sidecar.admin-token"


def flatten(prefix: str, data: dict[str, Any]) -> dict[str, str]:
    """A check's figures as the status page labels them (``data-field`` → ``data-value``)."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        field = f"{prefix}.{key}"
        if value is None or value == "" or value == []:
            continue  # the page shows nothing empty
        if isinstance(value, list) and value and isinstance(value[0], dict):
            for i, row in enumerate(value):
                flat.update(flatten(f"{field}.{i}", row))
        elif isinstance(value, dict):
            flat.update(flatten(field, value))
        elif isinstance(value, list):
            flat[field] = ", ".join(js_string(v) for v in value)
        else:
            flat[field] = js_string(value)
    return flat


def js_string(value: object) -> str:
    """``String(value)`` as the page's JavaScript computes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


async def shown_figures(page: Page) -> dict[str, str]:
    return await page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('[data-field][data-value]')]"
        ".map(e => [e.dataset.field, e.dataset.value]))"
    )


def admin_token(api: Api) -> str:
    return api.store.create("it-admin", frozenset({Scope.ADMIN}), replace=True)


async def health(api: Api, token: str) -> dict[str, Any]:
    response = await api.client.get("/v1/health", headers={"Authorization": f"Bearer {token}"})
    return await response.json()


async def settled(api: Api, token: str) -> None:
    """Wait until the sandbox's first trusted-list fetch (at start, in the background)
    is done: the page and the test's own /v1/health must see the same figures."""
    for _ in range(300):
        checks = {c["name"]: c for c in (await health(api, token))["checks"]}
        lists = checks.get("trusted-lists")
        if lists is None or lists["data"].get("last_refresh") is not None:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the trusted lists were not fetched within 30 s")


def assert_figures_match(shown: dict[str, str], body: dict[str, Any]) -> list[str]:
    """Every figure of every check of /v1/health is on the page with the same value."""
    compared = []
    for check in body["checks"]:
        if check["name"] == "errors":
            continue
        assert shown[f"{check['name']}.status"] == check["status"], check["name"]
        for field, expected in flatten(check["name"], check.get("data", {})).items():
            assert field in shown, f"{field} is not on the page"
            if field.endswith("seconds"):  # an age: it grew between the two reads
                assert abs(float(shown[field]) - float(expected)) < 30, field
            else:
                assert shown[field] == expected, field
            compared.append(field)
    return compared


async def test_status_page_from_a_one_time_link(sandbox_api: Api, browser: Browser) -> None:
    token = admin_token(sandbox_api)
    # Something for the recent-errors list: a program with a stale token.
    stale = {"Authorization": "Bearer stale-token"}
    assert (await sandbox_api.client.get("/v1/uuids", headers=stale)).status == 401
    base = str(sandbox_api.client.make_url("/"))
    page = await browser.new_page()
    await page.goto(f"{base}#token={token}")
    assert await page.wait_for("document.body.dataset.ready") == "true"

    # The token left the address bar (and history) for this tab's session storage.
    assert await page.evaluate("location.href") == base
    assert await page.evaluate(f"sessionStorage.getItem('{STORAGE_KEY}')") == token
    assert await page.evaluate("document.cookie") == ""
    assert await page.evaluate("localStorage.length") == 0
    assert token not in await page.evaluate("document.documentElement.outerHTML")

    body = await health(sandbox_api, token)
    assert await page.evaluate("document.getElementById('overall').dataset.value") == body["status"]
    assert (
        await page.evaluate("document.getElementById('version').dataset.value") == body["version"]
    )
    shown = await shown_figures(page)
    assert_figures_match(shown, body)
    latest_error = await page.evaluate(
        "document.querySelector('[data-field=\"errors.recent.0\"]').textContent"
    )
    assert "GET /v1/uuids without a valid token" in latest_error
    assert "stale-token" not in await page.evaluate("document.body.innerText")
    await page.screenshot("status-page")
    await page.close()


async def test_status_page_key_tsa_and_outbox_figures(sandbox_api: Api, browser: Browser) -> None:
    """The figures an IT person looks for first: keys' expiry, the TSA, the outbox."""
    token = admin_token(sandbox_api)
    page = await browser.new_page()
    await settled(sandbox_api, token)
    await page.goto(f"{sandbox_api.client.make_url('/')}#token={token}")
    assert await page.wait_for("document.body.dataset.ready") == "true"
    body = await health(sandbox_api, token)
    compared = assert_figures_match(await shown_figures(page), body)
    names = " ".join(c["name"] for c in body["checks"])
    print("health checks:", json.dumps(body["checks"], indent=1))
    assert any("days_to_expiry" in f for f in compared), f"no key expiry among {compared}"
    assert "tsa" in names, f"no TSA check among {names}"
    assert any("outbox" in f or f.startswith("outbox") for f in compared), (
        f"no outbox figures among {compared}"
    )
    await page.screenshot("status-page-sandbox")
    await page.close()


#: What the page must never show: an empty placeholder, or a value JavaScript lost.
_EMPTY = ("", "—", "-", "null", "undefined", "NaN", "Invalid Date")


@pytest.mark.parametrize("language", ["fr", "de", "en"])
async def test_status_page_in_the_readers_language(
    sandbox_api: Api, browser: Browser, language: str, tmp_path: Path
) -> None:
    """The browser's language picks the page's: words, dates (checked against Babel's
    formats), the physician's name from the certificate, the CNS queue in words, and
    nothing empty; a screenshot of each is left in the test's directory."""
    token = admin_token(sandbox_api)
    page = await browser.new_page()
    agent = await page.evaluate("navigator.userAgent")
    await page.send("Network.enable")
    await page.send(
        "Network.setUserAgentOverride", userAgent=agent, acceptLanguage=f"{language}-LU,{language}"
    )
    await page.send("Emulation.setLocaleOverride", locale=f"{language}-LU")
    await settled(sandbox_api, token)
    await page.goto(f"{sandbox_api.client.make_url('/')}#token={token}")
    assert await page.wait_for("document.body.dataset.ready") == "true"
    body = await health(sandbox_api, token)
    words = web_messages(language)

    def tr(english: str) -> str:
        found = words.get(english, english)
        return found if isinstance(found, str) else found[0]

    assert await page.evaluate("document.documentElement.lang") == language
    banner = {"ok": "Everything works.", "degraded": "Working, but something needs attention."}
    banner["down"] = "Not working: signing or forwarding is impossible right now."
    overall = await page.evaluate("document.getElementById('overall').textContent")
    assert overall == tr(banner[body["status"]])
    text = await page.evaluate("document.body.innerText")
    assert tr("Signing keys") in text and tr("Recent errors") in text
    if language != "en":
        assert "Everything works" not in text and "Signing keys" not in text

    # Each key: the physician's name, and its certificate's end in the reader's format.
    (keys,) = [c["data"]["keys"] for c in body["checks"] if c["name"] == "keys"]
    for key in keys:
        assert key["subject"].split("Common Name: ")[1].split(",")[0] in text
        not_after = datetime.fromisoformat(key["not_after"])
        sentence = await page.evaluate(
            f"document.querySelector('[data-expiry=\"{key['id']}\"]').textContent"
        )
        assert format_date(not_after, language) in sentence, sentence
        assert format_relative(not_after - datetime.now(UTC), language) in sentence, sentence
    expected_date = {"fr": "le 29/11/2029", "de": "am 29.11.2029", "en": "on 29/11/2029"}
    if keys[0]["not_after"].startswith("2029-11-29"):  # the sandbox's three-year certificate
        assert expected_date[language] in text

    # The CNS queue in words; two waiting, through the page's own plural rules.
    (outbox,) = [c for c in body["checks"] if c["name"] == "outbox"]
    if outbox["data"]["depth"] == 0:
        assert tr("No fee note waiting to be sent to the CNS.") in text
    two = await page.evaluate(
        "sidecar.ngettext('{n} fee note waiting, for {age}.', "
        "'{n} fee notes waiting, the oldest for {age}.', 2, {age: sidecar.duration(240)})"
    )
    assert (
        two.replace("\xa0", " ").replace("\u202f", " ")
        == {
            "fr": "2 mémoires d'honoraires en attente, le plus ancien depuis 4 min",
            "de": "2 Honorarnoten warten, die älteste seit 4 Min.",
            "en": "2 fee notes waiting, the oldest for 4 mins",
        }[language]
        + "."
    )

    # Nothing empty: no figure, sentence or cell shows a placeholder.
    shown = await page.evaluate(
        "[...document.querySelectorAll('#dashboard .value, #dashboard p, #dashboard td, "
        "#dashboard li, #dashboard h3')].filter(e => e.offsetParent !== null || "
        "e.closest('details')).map(e => e.textContent.trim())"
    )
    assert shown and not [t for t in shown if t in _EMPTY], shown
    for lost in ("undefined", "NaN", "null", "{n}", "{age}", "Invalid Date"):
        assert lost not in text, lost
    assert_figures_match(await shown_figures(page), body)

    saved = await page.screenshot(f"status-page-{language}")
    shutil.copy2(saved, tmp_path / saved.name)
    await page.close()


async def test_status_page_says_what_is_wrong_first(
    api: Api, browser: Browser, tmp_path: Path
) -> None:
    """A daemon with nothing set up, read in German: the banner, then one line per part
    that needs attention with what to do, above the parts themselves."""
    token = admin_token(api)
    page = await browser.new_page()
    agent = await page.evaluate("navigator.userAgent")
    await page.send("Network.enable")
    await page.send("Network.setUserAgentOverride", userAgent=agent, acceptLanguage="de-LU,de")
    await page.goto(f"{api.client.make_url('/')}#token={token}")
    assert await page.wait_for("document.body.dataset.ready") == "true"
    body = await health(api, token)
    wrong = sorted(c["name"] for c in body["checks"] if c["status"] != "ok")
    assert body["status"] == "degraded" and {"keys", "tsa"} <= set(wrong), wrong
    todo = await page.evaluate(
        "[...document.querySelectorAll('#todo li')].map(li => [li.dataset.todo, li.innerText])"
    )
    assert sorted(name for name, _ in todo) == wrong
    said = dict(todo)
    assert "Es ist kein Signaturschlüssel konfiguriert" in said["keys"]
    assert "sidecar setup" in said["keys"] and "no signing key" not in said["keys"]
    # What is wrong comes before the parts: the list sits above the first card.
    above = await page.evaluate(
        "document.getElementById('todo').compareDocumentPosition("
        "document.querySelector('article.check')) & Node.DOCUMENT_POSITION_FOLLOWING"
    )
    assert above
    overall = await page.evaluate("document.getElementById('overall').textContent")
    assert overall == "In Betrieb, aber etwas braucht Ihre Aufmerksamkeit."
    saved = await page.screenshot("status-page-de-degraded")
    shutil.copy2(saved, tmp_path / saved.name)
    await page.close()


async def test_status_page_asks_for_a_token_and_refuses_a_bad_one(
    api: Api, browser: Browser
) -> None:
    page = await browser.new_page()
    await page.goto(str(api.client.make_url("/")))
    assert await page.wait_for("document.body.dataset.ready") == "login"
    assert await page.evaluate("document.getElementById('login').hidden") is False

    async def sign_in(value: str) -> None:
        await page.evaluate(
            f"document.getElementById('token').value = {json.dumps(value)};"
            "document.body.dataset.ready = '';"
            "document.getElementById('login-form').requestSubmit()"
        )

    await sign_in("not-a-token")
    assert await page.wait_for("document.body.dataset.ready") == "login"
    assert "not accepted" in await page.evaluate(
        "document.getElementById('login-error').textContent"
    )
    assert await page.evaluate(f"sessionStorage.getItem('{STORAGE_KEY}')") is None

    await sign_in(api.tokens["signer"])  # a real token, but no admin scope
    assert await page.wait_for("document.body.dataset.ready") == "login"
    assert "admin" in await page.evaluate("document.getElementById('login-error').textContent")

    await sign_in(admin_token(api))
    assert await page.wait_for("document.body.dataset.ready") == "true"
    assert await page.evaluate("document.getElementById('login').hidden") is True
    # Revoking the token takes the page back to the login at its next refresh.
    api.store.revoke("it-admin")
    await page.evaluate("document.body.dataset.ready = ''")
    await page.evaluate("location.reload()")
    assert await page.wait_for("document.body.dataset.ready") == "login"
    await page.screenshot("status-page-login")
    await page.close()


async def test_docs_render_every_route_with_a_curl_example(api: Api, browser: Browser) -> None:
    openapi = await (await api.client.get("/openapi.json")).json()
    page = await browser.new_page()
    await page.goto(str(api.client.make_url("/docs")))
    assert await page.wait_for("document.body.dataset.ready") == "true"
    examples: dict[str, str] = await page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('section[data-operation]')]"
        ".map(s => [s.dataset.operation, s.querySelector('pre.curl').textContent]))"
    )
    operations = {
        (method.upper(), path): op
        for path, item in openapi["paths"].items()
        for method, op in item.items()
    }
    assert set(examples) == {op["operationId"] for op in operations.values()}
    for (method, path), op in operations.items():
        example = examples[op["operationId"]]
        assert example.startswith("curl") or "\ncurl" in example
        assert path.split("{")[0] in example
        assert ("Authorization: Bearer" in example) == bool(op["security"]), op["operationId"]
        if method == "DELETE":
            assert "-X DELETE" in example
    not_built = await page.evaluate("document.querySelectorAll('.pill.todo').length")
    assert not_built == sum(1 for op in operations.values() if not op["x-sidecar-implemented"])
    await page.screenshot("docs")
    await page.evaluate("document.getElementById('signForm').scrollIntoView()")
    await page.screenshot("docs-sign-form", full_page=False)
    await page.close()

    # What a vendor copies from the page runs as it is.
    env = {"TOKEN": api.tokens["signer"], "PATH": "/usr/bin:/bin"}
    result = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", examples["getUuids"]],
        env=env,
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert len(json.loads(result.stdout)["uuids"]) == 5
    result = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", examples["getHealth"]],
        env=env,
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert json.loads(result.stdout)["status"] in {"ok", "degraded", "down"}


async def test_pages_keep_the_host_guard_and_safe_headers(api: Api) -> None:
    for path in ("/", "/docs", "/assets/status.js", "/assets/sidecar.css"):
        response = await api.client.get(path)
        assert response.status == 200, path
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "Access-Control-Allow-Origin" not in response.headers
        rebound = await api.client.get(path, headers={"Host": "attacker.example"})
        assert rebound.status == 403, path
    page = await (await api.client.get("/")).text()
    assert "<script>" not in page  # no inline script: the CSP would block it anyway
    for name in ("status.html", "..%2Fapi%2Fdocs.py", "nope.js"):
        assert (await api.client.get(f"/assets/{name}")).status == 404, name
    # /, /docs and the assets are pages, not part of the API contract.
    paths = (await (await api.client.get("/openapi.json")).json())["paths"]
    assert not {"/", "/docs", "/assets/{name}"} & set(paths)


def sidecar_cli(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args, "--port", str(daemon.port)],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def health_status(daemon: DaemonProcess, token: str) -> int:
    request = urllib.request.Request(
        f"{daemon.base_url}/v1/health", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_status_cli_link_signs_the_page_in_once(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path, browser: Browser
) -> None:
    daemon = await asyncio.to_thread(daemon_factory, tmp_path / "home")
    opened = await asyncio.to_thread(sidecar_cli, daemon, "status", "--open")
    link = opened.stdout.strip()
    assert link.startswith(f"http://127.0.0.1:{daemon.port}/#token="), opened
    token = link.split("#token=", 1)[1]
    assert (daemon.home / "status.token").stat().st_mode & 0o077 == 0
    assert token not in daemon.log_text()

    page = await browser.new_page()
    await page.goto(link)
    assert await page.wait_for("document.body.dataset.ready") == "true"
    assert "#token" not in await page.evaluate("location.href")
    await page.close()

    # The terminal summary reuses the kept token; a new link retires the old one.
    summary = await asyncio.to_thread(sidecar_cli, daemon, "status")
    assert summary.stdout.startswith(f"sidecar {__version__} at "), summary
    assert "no errors since the daemon started" in summary.stdout
    assert token not in summary.stdout + summary.stderr
    assert await asyncio.to_thread(health_status, daemon, token) == 200
    again = await asyncio.to_thread(sidecar_cli, daemon, "status", "--open")
    assert again.stdout.strip() != link
    assert await asyncio.to_thread(health_status, daemon, token) == 401

    as_json = await asyncio.to_thread(sidecar_cli, daemon, "status", "--json")
    body = json.loads(as_json.stdout)
    assert as_json.returncode == (0 if body["status"] == "ok" else 1)
    assert {c["name"] for c in body["checks"]} >= {"errors"}


def test_status_cli_says_when_no_daemon_answers(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "status", "--port", str(free_port())],
        env={**os.environ, "SIDECAR_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "does not answer" in result.stderr and "running" in result.stderr
