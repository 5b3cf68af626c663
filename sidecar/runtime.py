"""The running daemon's runtime file: which process serves this installation, and where.

``serve`` writes ``daemon.json`` in its data directory once it listens (mode 0600) and
removes it when it stops: its pid, address, port, whether it runs the sandbox, a
public instance id and a random *instance key*. A command of the same installation
(``doctor``, ``status``) reads the file and sends the key in
:data:`INSTANCE_KEY_HEADER` to ``GET /v1/health``: only the daemon that wrote the
file answers it with its ``instance`` and its checks. So a command never takes
another installation's daemon, answering on the same port, for its own.

The key is readable only by the daemon's user, lives as long as the daemon, and
opens nothing but the health detail; it is not an API client.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from .clients import _write_private
from .logs import register_secret
from .paths import Paths

log = logging.getLogger("sidecar.runtime")

__all__ = [
    "INSTANCE_KEY_HEADER",
    "RUNTIME_FILE",
    "DaemonRuntime",
    "new_runtime",
    "pid_alive",
    "read_runtime",
    "remove_runtime",
    "runtime_file",
    "write_runtime",
]

RUNTIME_FILE = "daemon.json"
#: Request header carrying the instance key to ``GET /v1/health``.
INSTANCE_KEY_HEADER = "X-Sidecar-Instance-Key"


@dataclass(frozen=True)
class DaemonRuntime:
    pid: int
    host: str
    port: int
    tls: bool
    sandbox: bool
    version: str
    started: str
    #: Public: names this run of the daemon in reports.
    instance: str
    #: Secret: proves a caller reads this installation's files.
    key: str

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid)


def runtime_file(paths: Paths) -> Path:
    return paths.data_dir / RUNTIME_FILE


def new_runtime(*, host: str, port: int, tls: bool, sandbox: bool, version: str) -> DaemonRuntime:
    key = secrets.token_urlsafe(24)
    register_secret(key)
    return DaemonRuntime(
        pid=os.getpid(),
        host=host,
        port=port,
        tls=tls,
        sandbox=sandbox,
        version=version,
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        instance=secrets.token_hex(8),
        key=key,
    )


def write_runtime(paths: Paths, runtime: DaemonRuntime) -> bool:
    """Write the file; False when the disk refuses it (full or read-only). The daemon
    serves all the same, degraded: only ``doctor``/``status`` cannot recognise it."""
    try:
        _write_private(runtime_file(paths), json.dumps(asdict(runtime), indent=2) + "\n")
    except OSError as exc:
        log.warning(
            "the runtime file cannot be written (%s): doctor and status will not "
            "recognise this daemon until it is restarted on a disk that takes writes",
            exc.strerror or type(exc).__name__,
        )
        return False
    return True


def read_runtime(paths: Paths) -> DaemonRuntime | None:
    """The file's content, or None when there is none (or it cannot be read or parsed)."""
    try:
        raw = json.loads(runtime_file(paths).read_text("utf-8"))
        runtime = DaemonRuntime(**{k: raw[k] for k in DaemonRuntime.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    register_secret(runtime.key)
    return runtime


def remove_runtime(paths: Paths, runtime: DaemonRuntime) -> None:
    """Remove the file if it is still this run's (a later daemon may have replaced it)."""
    current = read_runtime(paths)
    if current is not None and current.instance == runtime.instance:
        with contextlib.suppress(OSError):
            runtime_file(paths).unlink()


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True
