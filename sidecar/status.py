"""``sidecar status [--open]``: the daemon's health in a terminal, or a link to the page.

Both need an admin token. The command runs as the service's user (it edits the
clients file, as ``sidecar token`` does) and keeps the token of a client named
``status`` (scope ``admin``) in ``status.token`` next to ``default.token`` (mode 0600).

``--open`` re-keys that client and prints ``http://127.0.0.1:PORT/#token=...``: the
status page moves the token from the fragment (never sent to any server, never in a
Referer) into the tab's sessionStorage and removes it from the address bar. Each
``--open`` invalidates the previous link. The browser is not launched by us: a URL
on a command line is visible to the other users of the machine.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from .clients import ClientStore, Scope, _write_private
from .config import Settings
from .logs import register_secret
from .paths import Paths

__all__ = ["STATUS_CLIENT", "daemon_url", "status_command", "status_token"]

#: The client whose token the status command and link use.
STATUS_CLIENT = "status"


def daemon_url(settings: Settings) -> str:
    """Where this machine reaches the configured daemon."""
    server = settings.server
    host = server.host
    if host in ("0.0.0.0", ""):  # noqa: S104 - we connect, we do not bind
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if server.tls_cert is not None else "http"
    return f"{scheme}://{shown}:{server.port}"


def _token_file(paths: Paths) -> Path:
    return paths.config_dir / "status.token"


def status_token(paths: Paths, *, renew: bool) -> str:
    """The ``status`` client's token: the kept one, or a new one (*renew*, or none valid)."""
    store = ClientStore(paths.clients_file)
    file = _token_file(paths)
    if not renew and file.exists():
        token = file.read_text(encoding="utf-8").strip()
        client = store.authenticate(token)
        if client is not None and client.name == STATUS_CLIENT:
            register_secret(token)
            return token
    token = store.create(STATUS_CLIENT, frozenset({Scope.ADMIN}), replace=True)
    _write_private(file, token + "\n")
    return token


def _get_health(url: str, token: str, timeout: float) -> dict[str, Any]:
    # *url* is built by daemon_url(): http(s) only.
    request = urllib.request.Request(  # noqa: S310
        f"{url}/v1/health", headers={"Authorization": f"Bearer {token}"}
    )
    context = None
    if url.startswith("https:"):
        # A shared deployment's own certificate for a LAN name; this is a local probe.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
        return json.loads(response.read())


def _summary(url: str, health: dict[str, Any]) -> list[str]:
    lines = [f"sidecar {health.get('version')} at {url}: {health.get('status')}"]
    errors: list[dict[str, str]] = []
    for check in health.get("checks", []):
        if check["name"] == "errors":
            errors = check.get("data", {}).get("recent", [])
            continue
        lines.append(f"  {check['status']:<9} {check['name']:<14} {check.get('detail', '')}")
    if errors:
        lines.append("recent errors (newest first):")
        for error in errors:
            moment = datetime.fromisoformat(error["time"]).astimezone()
            lines.append(f"  {moment:%Y-%m-%d %H:%M:%S} {error['area']:<5} {error['message']}")
    else:
        lines.append("no errors since the daemon started")
    return lines


def status_command(
    settings: Settings,
    paths: Paths,
    *,
    open_link: bool,
    as_json: bool,
    out: TextIO,
    err: TextIO,
    timeout: float = 10.0,
) -> int:
    """Exit status: 0 when the daemon is ok, 1 when degraded, down or not answering."""
    url = daemon_url(settings)
    try:
        token = status_token(paths, renew=open_link)
    except PermissionError:
        print(
            f"sidecar: cannot write {paths.config_dir}: run this as the daemon's user "
            "(or an administrator)",
            file=err,
        )
        return 2
    if open_link:
        print(f"{url}/#token={token}", file=out)
        print(
            "open this link in a browser on this computer; it signs the status page in "
            "and stops working at the next 'sidecar status --open'",
            file=err,
        )
    try:
        health = _get_health(url, token, timeout)
    except urllib.error.HTTPError as exc:
        print(f"sidecar: the daemon at {url} answered {exc.code}", file=err)
        return 1
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"sidecar: the daemon does not answer at {url} ({reason}); is it running?", file=err)
        return 1
    if as_json:
        print(json.dumps(health, indent=2), file=out)
    elif not open_link:
        print("\n".join(_summary(url, health)), file=out)
    else:
        print(f"sidecar {health.get('version')} at {url}: {health.get('status')}", file=err)
    return 0 if health.get("status") == "ok" else 1
