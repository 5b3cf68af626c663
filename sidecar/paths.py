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
from dataclasses import dataclass
from pathlib import Path

import platformdirs

__all__ = ["Paths", "resolve_paths"]

APP_NAME = "sidecar"


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
