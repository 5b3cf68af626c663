"""``sidecar doctor``'s CNS checks: can we reach the CNS and get in; is the outbox moving.

- ``cns``: the configured environment's base URL, the TLS client certificate and the
  bearer/OAuth2 step (``[cns]``), then the health operation. Refused or unresolved
  connection, no answer, 401/403 (credentials) and 5xx (maintenance) each get their
  own words and fix. With ``--sandbox`` and no sandbox URL configured: the simulator
  ``serve --sandbox`` runs on the sandbox's CNS port (``[sandbox] cns_port``, else the
  one recorded in its ``sandbox.json``).
- ``outbox``: read-only look at the outbox database: how old the oldest message not
  yet settled is, how many gave up (``failed``: the CNS has no record of them) and how
  many have an outcome the CNS could not yet tell (``unknown``: never resubmit them).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

from ..doctor import DoctorCheck, DoctorContext, Finding
from ..i18n import _, format_number, ngettext
from .commands import outbox_path
from .transport import CnsConfigError, CnsTimeout, CnsTransport, CnsUnreachable, resolve_base_url

__all__ = ["DOCTOR_CHECKS", "check_cns", "check_outbox"]

#: Oldest message not settled: a warning past an hour, broken past a day.
PENDING_WARN_SECONDS = 3600.0
PENDING_FAIL_SECONDS = 86400.0


async def check_cns(ctx: DoctorContext) -> list[Finding]:
    if ctx.settings is None:
        return [Finding("cns", "skip", _("not checked: the configuration does not load"))]
    cns = ctx.settings.cns
    sandbox_url = None
    if ctx.sandbox and cns.environment == "sandbox":
        try:  # its cns_port: the configured one, else the one recorded at generation
            pki = ctx.sandbox_pki()
        except Exception:  # a damaged sandbox: the sandbox check reports it
            pki = None
        if pki is not None:
            sandbox_url = f"http://{pki.host}:{pki.cns_port}"
    try:
        base_url = resolve_base_url(cns, sandbox_url)
    except CnsConfigError as exc:
        if cns.environment == "sandbox":
            daemon = ctx.running_daemon()
            if daemon is not None and daemon.sandbox:
                # Not "run serve --sandbox": it runs, with its simulator.
                summary = _(
                    "the sandbox daemon (pid {pid}) serves the CNS simulator: "
                    "'sidecar doctor --sandbox' checks it",
                    pid=daemon.pid,
                )
                return [Finding("cns", "skip", summary)]
            unset = _("CNS forwarding is not configured: {reason}", reason=exc)
            return [Finding("cns", "skip", unset)]
        return [
            Finding(
                "cns",
                "fail",
                str(exc),
                fix=_(
                    "set [cns.base_urls] {environment} to the CNS address you were given",
                    environment=cns.environment,
                ),
            )
        ]
    data: dict[str, object] = {
        "url": base_url,
        "environment": cns.environment,
        "auth": cns.auth.mode,
    }
    try:
        transport = CnsTransport(cns, base_url, ctx.session)
    except CnsConfigError as exc:
        return [
            Finding(
                "cns",
                "fail",
                str(exc),
                fix=_("correct [cns.tls] / [cns.auth] (files, environment variables)"),
                data=data,
            )
        ]
    host = urlsplit(base_url).hostname or base_url
    reach_fix = (
        _(
            "{hint} (the sandbox daemon serves the CNS simulator)",
            hint=ctx.start_sandbox_hint(),
        )
        if sandbox_url is not None and base_url == sandbox_url
        else _(
            "check the network, proxy and firewall towards {host}; the CNS may also "
            "be in a maintenance window (deposits wait in the outbox meanwhile)",
            host=host,
        )
    )
    try:
        async with asyncio.timeout(ctx.timeout):
            answer = await transport.probe()
    except (CnsTimeout, TimeoutError):
        return [
            Finding(
                "cns",
                "fail",
                _("the CNS at {url} did not answer in time", url=base_url),
                fix=reach_fix,
                data=data,
            )
        ]
    except CnsUnreachable as exc:
        return [
            Finding(
                "cns",
                "fail",
                _("the CNS at {url} cannot be reached ({reason})", url=base_url, reason=exc),
                fix=reach_fix,
                data=data,
            )
        ]
    data["status"] = answer.status
    if answer.status in (401, 403):
        return [
            Finding(
                "cns",
                "fail",
                _(
                    "the CNS at {url} refuses our credentials (HTTP {status})",
                    url=base_url,
                    status=answer.status,
                ),
                fix=_(
                    "check [cns.auth] (client id and secret, or the token) and the client "
                    "certificate in [cns.tls]; the practice must be enrolled for this "
                    "environment"
                ),
                data=data,
            )
        ]
    if answer.status >= 500:
        return [
            Finding(
                "cns",
                "fail",
                _(
                    "the CNS at {url} answers HTTP {status} (down or in maintenance)",
                    url=base_url,
                    status=answer.status,
                ),
                fix=_("try again later; deposits wait in the outbox and are sent when it is back"),
                data=data,
            )
        ]
    if answer.status >= 400:
        return [
            Finding(
                "cns",
                "warn",
                _(
                    "the CNS at {url} answers its health check with HTTP {status}",
                    url=base_url,
                    status=answer.status,
                ),
                fix=_("check the health path in [cns.wire]"),
                data=data,
            )
        ]
    answers = (
        _("the CNS at {url} answers (authenticated)", url=base_url)
        if cns.auth.mode != "none"
        else _("the CNS at {url} answers", url=base_url)
    )
    return [Finding("cns", "ok", answers, data=data)]


def _read_outbox(path: Path) -> tuple[dict[str, int], float | None]:
    # Read-only: the doctor must never create, migrate or lock the daemon's database.
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        counts = dict(db.execute("SELECT status, count(*) FROM messages GROUP BY status"))
        (oldest,) = db.execute(
            "SELECT min(created_at) FROM messages "
            "WHERE status IN ('queued', 'sending', 'awaiting_timestamp')"
        ).fetchone()
    finally:
        db.close()
    return counts, oldest


async def check_outbox(ctx: DoctorContext) -> list[Finding]:
    if ctx.settings is None:
        return [Finding("outbox", "skip", _("not checked: the configuration does not load"))]
    path = outbox_path(ctx.settings, ctx.paths)
    if not isinstance(path, Path):  # shared by several daemons: each one's /v1/health
        return [Finding("outbox", "ok", _("a PostgreSQL outbox: see the daemons' health"))]
    if not path.exists():
        return [Finding("outbox", "ok", _("no outbox yet: nothing was sent to the CNS"))]
    try:
        counts, oldest = await asyncio.to_thread(_read_outbox, path)
    except sqlite3.Error as exc:
        return [
            Finding(
                "outbox",
                "fail",
                _("the outbox {path} cannot be read: {reason}", path=path, reason=exc),
                fix=_(
                    "look at the daemon's log; do not delete the file (it holds fee notes "
                    "not yet delivered)"
                ),
                data={"path": str(path)},
            )
        ]
    age = max(0.0, ctx.now().timestamp() - oldest) if oldest is not None else 0.0
    pending = sum(counts.get(s, 0) for s in ("queued", "sending", "awaiting_timestamp"))
    failed = counts.get("failed", 0)
    data = {
        "path": str(path),
        "counts": counts,
        "pending": pending,
        "oldest_pending_seconds": round(age, 1),
        "failed": failed,
        "unknown": counts.get("unknown", 0),
    }
    findings = []
    if age > PENDING_WARN_SECONDS:
        findings.append(
            Finding(
                "outbox:pending",
                "fail" if age > PENDING_FAIL_SECONDS else "warn",
                # English keeps "message(s)" in both forms (scripts read it).
                ngettext(
                    "{n} message(s) waiting, the oldest for {age}",
                    "{n} message(s) waiting, the oldest for {age}",
                    pending,
                    age=_duration(age),
                ),
                fix=_(
                    "the cns check says whether the CNS can be reached; "
                    "'sidecar outbox list' shows each message's last error"
                ),
                data=data,
            )
        )
    if failed:
        findings.append(
            Finding(
                "outbox:failed",
                "warn",
                ngettext(
                    "{n} message(s) failed: the retry budget was spent",
                    "{n} message(s) failed: the retry budget was spent",
                    failed,
                ),
                fix=_(
                    "'sidecar outbox list --status failed' shows why; once the cause is "
                    "fixed, 'sidecar outbox retry UUID' sends one again"
                ),
                data=data,
            )
        )
    unknown = counts.get("unknown", 0)
    if unknown:
        findings.append(
            Finding(
                "outbox:unknown",
                "warn",
                ngettext(
                    "{n} message(s) in state unknown: their answer was lost and the CNS "
                    "could not yet say whether it booked them",
                    "{n} message(s) in state unknown: their answer was lost and the CNS "
                    "could not yet say whether it booked them",
                    unknown,
                ),
                fix=_(
                    "do not send them again under a new UUID (the CNS could bill twice); the "
                    "daemon asks the CNS until it says. 'sidecar outbox list --status unknown' "
                    "shows them; 'sidecar outbox retry UUID' sends one again with the same UUID"
                ),
                data=data,
            )
        )
    if not findings:
        findings.append(
            Finding(
                "outbox",
                "ok",
                ngettext(
                    "{n} message(s) waiting, {delivered} delivered",
                    "{n} message(s) waiting, {delivered} delivered",
                    pending,
                    delivered=counts.get("delivered", 0),
                ),
                data=data,
            )
        )
    return findings


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return _("{value} days", value=format_number(seconds / 86400, pattern="0.0"))
    if seconds >= 3600:
        return _("{value} h", value=format_number(seconds / 3600, pattern="0.0"))
    return _("{value} min", value=format_number(seconds / 60, pattern="0"))


DOCTOR_CHECKS: list[tuple[str, DoctorCheck]] = [("cns", check_cns), ("outbox", check_outbox)]
