"""Where sidecar keeps its configuration, data, logs and sandbox.

Three layouts, checked in this order:

1. ``SIDECAR_HOME=DIR``: everything under one directory (portable installs,
   vendors' bundles, tests). The API contract promises ``DIR/default.token``
   and ``DIR/sandbox/roots.pem``.
2. A service: systemd hands us ``CONFIGURATION_DIRECTORY``, ``STATE_DIRECTORY``
   and ``LOGS_DIRECTORY``; elsewhere ``SIDECAR_SERVICE=1`` selects the
   platformdirs *site* directories (ProgramData on Windows).
3. An interactive user: the platformdirs *user* directories.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from .errors import Misconfigured
from .i18n import _

__all__ = ["HomeNotWritable", "Paths", "resolve_paths", "unwritable_reason", "write_atomically"]

APP_NAME = "sidecar"


class HomeNotWritable(Misconfigured):
    """A directory sidecar must write to cannot be written; the message says what to do."""

    def __init__(self, directory: Path, reason: str) -> None:
        self.directory = directory
        self.reason = reason
        super().__init__(
            _(
                "cannot write to {directory} ({reason}): run sidecar as the user who owns it "
                "(the daemon's user), or give this user write access to it "
                "(chown/chmod), or point SIDECAR_HOME at a directory of this user's",
                directory=directory,
                reason=reason,
            )
        )


def write_atomically(target: Path, data: bytes) -> None:
    """Write *target* whole or not at all: a temporary file beside it, fsync, rename.

    The file ends up readable by its owner only (mkstemp creates it 0600)."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def unwritable_reason(directory: Path) -> str | None:
    """Why *directory* cannot be written to, or None when a probe file could be created
    and removed there. (Modes alone do not tell: root, ACLs, read-only mounts.)"""
    probe = directory / f".sidecar-probe-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileNotFoundError:
        return _("it does not exist")
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    try:
        probe.unlink()
    except OSError as exc:
        return _("a file made there cannot be removed: {error}", error=exc.strerror)
    return None


@dataclass(frozen=True)
class Paths:
    """The directories and well-known files of one installation."""

    config_dir: Path
    data_dir: Path
    log_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "sidecar.toml"

    @property
    def clients_file(self) -> Path:
        return self.config_dir / "clients.json"

    @property
    def default_token_file(self) -> Path:
        return self.config_dir / "default.token"

    @property
    def sandbox_dir(self) -> Path:
        return self.data_dir / "sandbox"

    def ensure(self) -> None:
        """Create the directories, private to the service's user."""
        for directory in (self.config_dir, self.data_dir, self.log_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def directories(self) -> tuple[Path, ...]:
        """The distinct directories of this layout (one for ``SIDECAR_HOME`` but logs)."""
        return tuple(dict.fromkeys((self.config_dir, self.data_dir, self.log_dir)))

    def ensure_writable(self) -> None:
        """Create the directories and prove each can be written to, or raise
        :class:`HomeNotWritable` naming the first that cannot."""
        for directory in self.directories():
            try:
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                raise HomeNotWritable(directory, exc.strerror or type(exc).__name__) from None
            reason = unwritable_reason(directory)
            if reason is not None:
                raise HomeNotWritable(directory, reason)


def _first_dir(value: str) -> Path:
    # systemd passes a colon-separated list when the unit names several.
    return Path(value.split(":", 1)[0])


def resolve_paths(environ: os._Environ[str] | dict[str, str] | None = None) -> Paths:
    """Work out the layout from the environment (see the module docstring)."""
    env = os.environ if environ is None else environ
    home = env.get("SIDECAR_HOME")
    if home:
        root = Path(home).expanduser().absolute()
        return Paths(config_dir=root, data_dir=root, log_dir=root / "logs")
    systemd = {
        key: env[key]
        for key in ("CONFIGURATION_DIRECTORY", "STATE_DIRECTORY", "LOGS_DIRECTORY")
        if env.get(key)
    }
    if len(systemd) == 3:
        return Paths(
            config_dir=_first_dir(systemd["CONFIGURATION_DIRECTORY"]),
            data_dir=_first_dir(systemd["STATE_DIRECTORY"]),
            log_dir=_first_dir(systemd["LOGS_DIRECTORY"]),
        )
    if env.get("SIDECAR_SERVICE") == "1":
        return Paths(
            config_dir=Path(platformdirs.site_config_dir(APP_NAME, appauthor=False)),
            data_dir=Path(platformdirs.site_data_dir(APP_NAME, appauthor=False)),
            log_dir=Path(platformdirs.site_data_dir(APP_NAME, appauthor=False)) / "logs",
        )
    return Paths(
        config_dir=Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
        data_dir=Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
        log_dir=Path(platformdirs.user_log_dir(APP_NAME, appauthor=False)),
    )
