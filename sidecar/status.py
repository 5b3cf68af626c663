"""``sidecar status [--open]``: the daemon's health in a terminal, or a link to the page.

``sidecar status`` makes no credential. It shows the daemon's parts when it can
prove it belongs to the daemon's installation — run as the daemon's user, it reads
the key of the daemon's runtime file (:mod:`sidecar.runtime`) — or with the token
an earlier ``--open`` kept; otherwise it shows the public status and says how to
see more.

``--open`` (explicitly asked for) makes or re-keys a client named ``status`` (scope
``admin``), keeps its token in ``status.token`` next to ``default.token`` (mode 0600,
so the command runs as the service's user, as ``sidecar token`` does) and prints
``http://127.0.0.1:PORT/#token=...``: the
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
from .i18n import N_, _, format_datetime
from .logs import register_secret
from .paths import Paths
from .runtime import INSTANCE_KEY_HEADER, DaemonRuntime, read_runtime

__all__ = ["STATUS_CLIENT", "daemon_url", "kept_token", "open_link_token", "status_command"]

#: The client whose token the status command and link use.
STATUS_CLIENT = "status"


def daemon_url(settings: Settings, runtime: DaemonRuntime | None = None) -> str:
    """Where this machine reaches the daemon: the running one's address (its runtime
    file), else the configured one."""
    server = settings.server
    host, port, tls = server.host, server.port, server.tls_cert is not None
    if runtime is not None:
        host, port, tls = runtime.host, runtime.port, runtime.tls
    if host in ("0.0.0.0", ""):  # noqa: S104 - we connect, we do not bind
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def _token_file(paths: Paths) -> Path:
    return paths.config_dir / "status.token"


def kept_token(paths: Paths) -> str | None:
    """The token an earlier ``--open`` kept, if it still opens the ``status`` client."""
    file = _token_file(paths)
    try:
        token = file.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    client = ClientStore(paths.clients_file).authenticate(token)
    if client is None or client.name != STATUS_CLIENT:
        return None
    register_secret(token)
    return token


def open_link_token(paths: Paths) -> str:
    """Make or re-key the ``status`` client (scope admin), keep its token; the new token."""
    token = ClientStore(paths.clients_file).create(
        STATUS_CLIENT, frozenset({Scope.ADMIN}), replace=True
    )
    _write_private(_token_file(paths), token + "\n")
    return token


def _get_health(url: str, headers: dict[str, str], timeout: float) -> dict[str, Any]:
    # *url* is built by daemon_url(): http(s) only.
    request = urllib.request.Request(f"{url}/v1/health", headers=headers)  # noqa: S310
    context = None
    if url.startswith("https:"):
        # A shared deployment's own certificate for a LAN name; this is a local probe.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
        return json.loads(response.read())


#: The daemon's states in the reader's language (English: the JSON's own words).
_STATES = {"ok": N_("ok"), "degraded": N_("degraded"), "down": N_("down")}


def _state(status: object) -> str:
    return _(_STATES[status]) if isinstance(status, str) and status in _STATES else str(status)


def _headline(url: str, health: dict[str, Any]) -> str:
    return _(
        "sidecar {version} at {url}: {status}",
        version=health.get("version"),
        url=url,
        status=_state(health.get("status")),
    )


def _summary(url: str, health: dict[str, Any]) -> list[str]:
    lines = [_headline(url, health)]
    if "checks" not in health:
        return lines
    errors: list[dict[str, str]] = []
    for check in health.get("checks", []):
        if check["name"] == "errors":
            errors = check.get("data", {}).get("recent", [])
            continue
        state = _state(check["status"])
        lines.append(f"  {state:<15} {check['name']:<14} {check.get('detail', '')}")
    if errors:
        lines.append(_("recent errors (newest first):"))
        for error in errors:
            moment = format_datetime(datetime.fromisoformat(error["time"]))
            lines.append(f"  {moment} {error['area']:<5} {error['message']}")
    else:
        lines.append(_("no errors since the daemon started"))
    return lines


def status_command(
    settings: Settings,
    paths: Paths,
    *,
    open_link: bool,
    as_json: bool,
    out: TextIO,
    err: TextIO,
    port: int | None = None,
    timeout: float = 10.0,
) -> int:
    """Exit status: 0 when the daemon is ok, 1 when degraded, down or not answering,
    2 when ``--open`` cannot write its client."""
    runtime = read_runtime(paths)
    if runtime is not None and (port is not None or not runtime.alive):
        runtime = None  # a --port names another daemon; a dead pid, a stale file
    url = daemon_url(settings, runtime)
    if port is not None:
        url = url.rsplit(":", 1)[0] + f":{port}"
    headers: dict[str, str] = {}
    if open_link:
        try:
            token = open_link_token(paths)
        except PermissionError:
            print(
                _(
                    "sidecar: cannot write {directory}: run this as the daemon's user "
                    "(or an administrator)",
                    directory=paths.config_dir,
                ),
                file=err,
            )
            return 2
        print(f"{url}/#token={token}", file=out)
        print(
            _(
                "client {client!r} (scope admin) keyed, its token kept in {file}; open this "
                "link in a browser on this computer: it signs the status page in and stops "
                "working at the next 'sidecar status --open'",
                client=STATUS_CLIENT,
                file=_token_file(paths),
            ),
            file=err,
        )
        headers["Authorization"] = f"Bearer {token}"
    elif (kept := kept_token(paths)) is not None:
        headers["Authorization"] = f"Bearer {kept}"
    if runtime is not None:
        headers[INSTANCE_KEY_HEADER] = runtime.key
    try:
        health = _get_health(url, headers, timeout)
    except urllib.error.HTTPError as exc:
        print(_("sidecar: the daemon at {url} answered {code}", url=url, code=exc.code), file=err)
        return 1
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(
            _(
                "sidecar: the daemon does not answer at {url} ({reason}); is it running?",
                url=url,
                reason=reason,
            ),
            file=err,
        )
        return 1
    if runtime is not None and "Authorization" not in headers and "instance" not in health:
        print(
            _(
                "sidecar: the daemon answering at {url} is not this installation's "
                "(its own, pid {pid}, does not answer there)",
                url=url,
                pid=runtime.pid,
            ),
            file=err,
        )
        return 1
    if "checks" not in health and not open_link:
        print(
            _(
                "sidecar: only the public status is shown: run this as the daemon's user to "
                "see each part, or make an admin client explicitly with 'sidecar status "
                "--open' (client 'status', token kept in status.token) or "
                "'sidecar token create it-admin --scope admin'"
            ),
            file=err,
        )
    if as_json:
        print(json.dumps(health, indent=2), file=out)
    elif not open_link:
        print("\n".join(_summary(url, health)), file=out)
    else:
        print(_headline(url, health), file=err)
    return 0 if health.get("status") == "ok" else 1
