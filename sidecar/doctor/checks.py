"""The doctor's own checks: configuration, secrets' permissions, disk, daemon, sandbox."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import sys
import tomllib
from pathlib import Path

import aiohttp

from .. import __version__
from ..i18n import N_, _, format_number
from ..runtime import INSTANCE_KEY_HEADER
from . import DoctorCheck, DoctorContext, Finding, Status
from .probes import (
    ProbeError,
    clock_skew_finding,
    expiry_finding,
    load_pem_certificates,
    ocsp_probe,
    timestamp_probe,
)

__all__ = [
    "CORE_CHECKS",
    "check_config",
    "check_daemon",
    "check_disk",
    "check_permissions",
    "check_sandbox",
    "check_writable",
]

#: Below this much free space on the data directory's disk the daemon is broken
#: (SQLite stores, outbox, logs); below the warning level it soon will be.
DISK_FAIL_BYTES = 100 * 1024**2
DISK_WARN_BYTES = 1024**3
#: TOML keys whose values are secrets: a file holding one must be private.
_SECRET_WORDS = ("pin", "passphrase", "password", "secret", "token", "api_key")


async def check_config(ctx: DoctorContext) -> list[Finding]:
    where = str(ctx.config_file) if ctx.config_file else _("configuration")
    if ctx.config_error:
        return [
            Finding(
                "config",
                "fail",
                ctx.config_error,
                fix=_("correct the file ('sidecar config check' tells the same), then restart"),
            )
        ]
    assert ctx.settings is not None
    if ctx.config_file is None or not ctx.config_file.exists():
        return [Finding("config", "ok", _("no {where}: defaults in use", where=where))]
    from ..config import ConfigError
    from ..server import validate_for_serve

    try:
        validate_for_serve(ctx.settings)
    except ConfigError as exc:
        return [Finding("config", "fail", str(exc), fix=_("correct the file, then restart"))]
    return [Finding("config", "ok", _("{where} loads", where=where), data={"file": where})]


def _holds_secrets(file: Path) -> bool:
    try:
        document = tomllib.loads(file.read_text("utf-8"))
    except (OSError, ValueError):
        return False

    def walk(value: object) -> bool:
        if isinstance(value, dict):
            return any(
                any(w in str(k).lower() for w in _SECRET_WORDS) or walk(v) for k, v in value.items()
            )
        if isinstance(value, list):
            return any(walk(v) for v in value)
        return False

    return walk(document)


def _mode_finding(check: str, path: Path, *, secret: bool, what: str) -> Finding | None:
    """A finding for *path*'s mode, or None when it does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    data = {"path": str(path), "mode": f"{mode:04o}"}
    is_dir = stat.S_ISDIR(st.st_mode)
    fix = f"chmod {'go-rwx' if is_dir else '600'} {path}"
    said = {"what": _(what), "path": path, "mode": f"{mode:04o}"}
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        return Finding(
            check, "fail", _("{what} {path} can be changed by others", **said), fix, data
        )
    if secret and mode & (stat.S_IRGRP | stat.S_IROTH):
        return Finding(check, "fail", _("{what} {path} is readable by others", **said), fix, data)
    if is_dir and mode & (stat.S_IRWXG | stat.S_IRWXO):
        # Private means no access for group and others: they can list what is there.
        summary = _("{what} {path} is open to group/others ({mode})", **said)
        return Finding(check, "warn", summary, fix, data)
    if os.geteuid() != 0 and st.st_uid != os.geteuid():
        return Finding(
            check,
            "warn",
            _(
                "{what} {path} belongs to uid {uid}, not to the user running doctor",
                uid=st.st_uid,
                **said,
            ),
            fix=_("run doctor as the service's user (Linux service: sudo sidecarctl doctor)"),
            data=data,
        )
    return Finding(check, "ok", _("{what} {path} is private ({mode})", **said), data=data)


async def check_writable(ctx: DoctorContext) -> list[Finding]:
    """Each directory the daemon writes to: a probe file is created and removed there."""
    from ..paths import unwritable_reason

    paths = ctx.paths
    names = {paths.config_dir: "config-dir", paths.data_dir: "data-dir", paths.log_dir: "log-dir"}
    if paths.config_dir == paths.data_dir:
        names[paths.config_dir] = "home"
    findings = []
    probed: set[Path] = set()
    for directory in paths.directories():
        check = f"writable:{names[directory]}"
        target = directory
        while not target.exists() and target != target.parent:
            target = target.parent  # made at first start: its parent must be writable
        if target in probed:
            continue  # e.g. logs/ not made yet: its parent is already reported
        probed.add(target)
        reason = unwritable_reason(target)
        data = {"path": str(directory)}
        if reason is None:
            summary = (
                _("{directory} is writable", directory=directory)
                if target == directory
                else _(
                    "{directory} is writable (to be made in {target})",
                    directory=directory,
                    target=target,
                )
            )
            findings.append(Finding(check, "ok", summary, data=data))
            continue
        findings.append(
            Finding(
                check,
                "fail",
                _(
                    "{target} cannot be written to by this user ({reason})",
                    target=target,
                    reason=reason,
                ),
                fix=_(
                    "run sidecar as the user who owns {target} (the daemon's user), or give "
                    "that user write access to it (chown/chmod)",
                    target=target,
                ),
                data=data,
            )
        )
    return findings


async def check_permissions(ctx: DoctorContext) -> list[Finding]:
    if sys.platform == "win32":
        return [
            Finding(
                "permissions",
                "skip",
                _("file modes do not apply on Windows; the installer sets the ProgramData ACL"),
            )
        ]
    paths = ctx.paths
    candidates: list[tuple[str, Path, bool, str]] = [
        ("permissions:config-dir", paths.config_dir, False, N_("directory")),
        ("permissions:data-dir", paths.data_dir, False, N_("directory")),
        ("permissions:clients", paths.clients_file, True, N_("client list")),
        ("permissions:token", paths.default_token_file, True, N_("token file")),
    ]
    if ctx.config_file is not None and ctx.config_file.exists():
        candidates.append(
            ("permissions:config", ctx.config_file, _holds_secrets(ctx.config_file), N_("config"))
        )
    if ctx.settings is not None and ctx.settings.server.tls_key is not None:
        candidates.append(("permissions:tls-key", ctx.settings.server.tls_key, True, N_("TLS key")))
    findings = [
        f
        for check, path, secret, what in candidates
        if (f := _mode_finding(check, path, secret=secret, what=what)) is not None
    ]
    return findings or [Finding("permissions", "ok", _("no secrets written yet (first start)"))]


async def check_disk(ctx: DoctorContext) -> list[Finding]:
    directory = ctx.paths.data_dir
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    usage = shutil.disk_usage(directory)
    free_mib = usage.free // 1024**2
    data = {"path": str(directory), "free_bytes": usage.free, "total_bytes": usage.total}
    status: Status
    if usage.free < DISK_FAIL_BYTES:
        status, fix = "fail", _("free space on the disk holding {directory}", directory=directory)
    elif usage.free < DISK_WARN_BYTES:
        status = "warn"
        fix = _("free space on the disk holding {directory} soon", directory=directory)
    else:
        status, fix = "ok", ""
    free = _("{free} MiB free for {directory}", free=format_number(free_mib), directory=directory)
    return [Finding("disk", status, free, fix, data)]


def _probe_host(host: str) -> str:
    # A daemon bound to every address still answers on loopback.
    if host in ("0.0.0.0", ""):  # noqa: S104 - we connect, we do not bind
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _daemon_url(ctx: DoctorContext) -> tuple[str, str, bool]:
    """(url of /v1/health, host:port as shown, TLS) of the daemon to look at."""
    assert ctx.settings is not None
    server = ctx.settings.server
    tls = server.tls_cert is not None
    host = _probe_host(ctx.host or server.host)
    port = ctx.port or server.port
    shown = f"{f'[{host}]' if ':' in host else host}:{port}"
    return f"{'https' if tls else 'http'}://{shown}/v1/health", shown, tls


async def check_daemon(ctx: DoctorContext) -> list[Finding]:
    if ctx.settings is None:
        return [Finding("daemon", "skip", _("not checked: the configuration does not load"))]
    url, shown, tls = _daemon_url(ctx)
    port = ctx.port or ctx.settings.server.port
    own = ctx.running_daemon()
    home = ctx.paths.config_dir
    start_fix = _(
        "start it: Linux 'systemctl start sidecar' (journalctl -u sidecar says why it "
        "stopped), Windows 'sidecar service start', or 'sidecar serve' in a terminal"
    )
    elsewhere = ""
    if own is not None and own.port != port:
        elsewhere = _(
            "this installation's daemon (pid {pid}) listens on port {port}",
            pid=own.pid,
            port=own.port,
        )
        start_fix = _(
            "{elsewhere}: run 'sidecar doctor --port {port}', or set [server] port",
            elsewhere=elsewhere,
            port=own.port,
        )
    headers = {INSTANCE_KEY_HEADER: own.key} if own is not None else {}
    try:
        async with asyncio.timeout(ctx.timeout):
            # Reachability only: a hospital's own TLS certificate is not checked here.
            async with ctx.session.get(url, ssl=not tls, headers=headers) as r:
                raw = await r.read()
    except TimeoutError:
        late = _("{url} did not answer in {seconds} s", url=url, seconds=format(ctx.timeout, "g"))
        return [Finding("daemon", "fail", late, start_fix)]
    except aiohttp.ClientConnectorError:
        return [Finding("daemon", "fail", _("nothing listens on {shown}", shown=shown), start_fix)]
    except aiohttp.ClientError as exc:
        return [Finding("daemon", "fail", f"{url}: {type(exc).__name__}", start_fix)]
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    status, version = body.get("status"), body.get("version")
    data = {"url": url, "status": status, "version": version}
    if status not in ("ok", "degraded", "down"):
        return [
            Finding(
                "daemon",
                "fail",
                _("{shown} answers, but not as sidecar", shown=shown),
                fix=_("another program uses port {port}: stop it or set [server] port", port=port),
                data=data,
            )
        ]
    if own is None or body.get("instance") != own.instance:
        # Another SIDECAR_HOME's daemon, another user's, or one older than runtime files.
        mine = elsewhere or (
            _("this installation's daemon (pid {pid}) does not answer there", pid=own.pid)
            if own is not None
            else _("no daemon of this installation ({home}) is running", home=home)
        )
        return [
            Finding(
                "daemon",
                "fail",
                _(
                    "a sidecar {version} answers at {shown}, but it is not this "
                    "installation's daemon: {mine}",
                    version=version,
                    shown=shown,
                    mine=mine,
                ),
                fix=start_fix
                if elsewhere
                else _(
                    "port {port} is another installation's (another SIDECAR_HOME or user): "
                    "stop that daemon, or give this one another port ([server] port, or "
                    "'sidecar serve --port N' and 'sidecar doctor --port N')",
                    port=port,
                ),
                data=data,
            )
        ]
    data["pid"] = own.pid
    findings = [_daemon_finding(status, str(version), url, data)]
    for part in body.get("checks", []):
        if part.get("status") != "ok" and part.get("name") != "errors":
            findings.append(
                Finding(
                    f"daemon:{part.get('name')}",
                    "fail" if part.get("status") == "down" else "warn",
                    _(
                        "the daemon reports {name} {status}: {detail}",
                        name=part.get("name"),
                        status=part.get("status"),
                        detail=part.get("detail") or _("no detail"),
                    ),
                    fix=_(_PART_FIX[str(part.get("name"))])
                    if str(part.get("name")) in _PART_FIX
                    else "",
                    data={"status": part.get("status")},
                )
            )
    if version != __version__:
        findings.append(
            Finding(
                "daemon:version",
                "warn",
                _(
                    "the running daemon is {running}, the installed sidecar is {installed}",
                    running=version,
                    installed=__version__,
                ),
                fix=_("restart the service to run the installed version"),
                data=data,
            )
        )
    return findings


#: What to do about a part the daemon reports not ok, by its health check's name.
_PART_FIX = {
    "keys": N_(
        "configure a signing key ([[keys]] in sidecar.toml) or unlock it; "
        "'sidecar keys list' shows each key's state"
    ),
    "tsa": N_("configure a TSA ([[trust.tsa]] url) or check the network path to it"),
    "cns": N_("check [cns] (base URL, credentials) and the network path to the CNS"),
    "outbox": N_("'sidecar outbox list' shows what waits and why"),
}


def _daemon_finding(status: str, version: str, url: str, data: dict[str, object]) -> Finding:
    if status == "down":
        down = _("daemon {version} reports itself down", version=version)
        return Finding("daemon", "fail", down, data=data)
    if status == "degraded":
        return Finding(
            "daemon",
            "warn",
            _(
                "daemon {version} answers at {url} but reports itself degraded "
                "(the daemon:* lines below name the parts)",
                version=version,
                url=url,
            ),
            data=data,
        )
    answers = _("daemon {version} answers at {url}", version=version, url=url)
    return Finding("daemon", "ok", answers, data=data)


async def check_sandbox(ctx: DoctorContext) -> list[Finding]:
    """With ``--sandbox``: the sandbox PKI and its TSA/OCSP, as ``serve --sandbox`` serves them."""
    if not ctx.sandbox:
        return []
    run_it = ctx.start_sandbox_hint()
    try:
        pki = ctx.sandbox_pki()
    except Exception as exc:  # SandboxError and whatever a damaged directory causes
        return [
            Finding(
                "sandbox",
                "fail",
                str(exc),
                fix=_(
                    "move {directory} aside; 'sidecar serve --sandbox' makes another",
                    directory=ctx.paths.sandbox_dir,
                ),
            )
        ]
    if pki is None:
        return [
            Finding(
                "sandbox",
                "fail",
                _("no sandbox PKI in {directory}", directory=ctx.paths.sandbox_dir),
                fix=run_it,
            )
        ]
    findings = [Finding("sandbox", "ok", _("sandbox PKI in {directory}", directory=pki.directory))]
    try:
        probe = await timestamp_probe(
            ctx.session, pki.tsa_url, local_now=ctx.now(), seconds=ctx.timeout
        )
    except ProbeError as exc:
        findings.append(
            Finding(
                "tsa:sandbox",
                "fail",
                exc.said("TSA"),
                fix=run_it if exc.kind == "unreachable" else _("look at the sandbox daemon's log"),
                data={"url": pki.tsa_url},
            )
        )
    else:
        findings.append(
            Finding(
                "tsa:sandbox",
                "ok",
                _(
                    "timestamp granted by {url} in {ms} ms",
                    url=pki.tsa_url,
                    ms=round(probe.round_trip_seconds * 1000),
                ),
                data={"url": pki.tsa_url, "gen_time": probe.gen_time.isoformat()},
            )
        )
        findings.append(clock_skew_finding("clock", probe.skew_seconds))
    for signer in pki.signers.values():
        (certificate,) = load_pem_certificates(signer.cert_pem.read_bytes())
        issuer = load_pem_certificates(signer.chain_pem.read_bytes())[0]
        findings.append(
            expiry_finding(f"certificate:{signer.id}", certificate, ctx.now(), what="certificate")
        )
        for url in certificate.ocsp_urls:
            try:
                answer = await ocsp_probe(
                    ctx.session, url, certificate, issuer, seconds=ctx.timeout
                )
            except ProbeError as exc:
                findings.append(
                    Finding(
                        f"ocsp:{signer.id}",
                        "fail",
                        exc.said(_("OCSP responder")),
                        fix=run_it if exc.kind == "unreachable" else _("look at the responder"),
                        data={"url": url},
                    )
                )
                continue
            status: Status = "ok" if answer == "good" else "fail"
            findings.append(
                Finding(
                    f"ocsp:{signer.id}",
                    status,
                    _("OCSP responder says {answer}", answer=answer),
                    fix="" if status == "ok" else _("the certificate cannot be used: replace it"),
                    data={"url": url},
                )
            )
    return findings


CORE_CHECKS: list[tuple[str, DoctorCheck]] = [
    ("config", check_config),
    ("permissions", check_permissions),
    ("writable", check_writable),
    ("disk", check_disk),
    ("daemon", check_daemon),
    ("sandbox", check_sandbox),
]
