"""The daemon's configuration: one TOML file, a default for every setting.

Each section is a frozen dataclass; the loader maps TOML keys to fields by name,
checks their types, and refuses unknown keys, so that a typo in a sysadmin's file
is reported at start (file, key, what is wrong) instead of being silently ignored.
Later subsystems add their section to :class:`Settings` and nothing else.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "ConfigError",
    "LimitSettings",
    "LogSettings",
    "SandboxSettings",
    "ServerSettings",
    "Settings",
    "load_settings",
    "parse_size",
]


class ConfigError(Exception):
    """A configuration file that cannot be used, with where and why."""

    def __init__(self, file: Path | None, key: str | None, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        where = str(file) if file else "configuration"
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_size(value: object) -> int:
    """``1048576``, ``"1 MiB"`` or ``"20MB"`` → bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        size = int(match.group(1)) * _UNITS[(match.group(2) or "b").lower()]
    else:
        raise ValueError('expected a size such as 1048576 or "20 MiB"')
    if size <= 0:
        raise ValueError("must be more than 0 bytes")
    return size


def _port(value: int) -> None:
    if not 1 <= value <= 65535:
        raise ValueError(f"must be between 1 and 65535 (got {value})")


def _positive(value: float) -> None:
    if value <= 0:
        raise ValueError(f"must be more than 0 (got {value})")


def _origin(value: tuple[str, ...]) -> None:
    for origin in value:
        if origin == "*" or not re.match(r"^https?://[^/\s]+$", origin):
            raise ValueError(
                f"{origin!r} is not an origin: write scheme://host[:port], no path, no wildcard"
            )


def _size_field(default: int) -> Any:
    return field(default=default, metadata={"parse": parse_size})


@dataclass(frozen=True)
class ServerSettings:
    """``[server]``: where the daemon listens and whom it lets in."""

    host: str = "127.0.0.1"
    port: int = field(default=7420, metadata={"check": _port})
    #: A shared hospital deployment may bind a LAN address, and then only with TLS.
    allow_remote: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Extra ``Host`` header names accepted besides the loopback names.
    allowed_hosts: tuple[str, ...] = ()
    #: Browser origins allowed to call the API (``Origin`` header); none by default.
    allowed_origins: tuple[str, ...] = field(default=(), metadata={"check": _origin})
    #: Seconds a graceful stop waits for requests under way.
    shutdown_timeout: float = field(default=30.0, metadata={"check": _positive})

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)


@dataclass(frozen=True)
class LimitSettings:
    """``[limits]``: the largest request body accepted, per kind of route."""

    json: int = _size_field(64 * 1024)
    xml: int = _size_field(20 * 1024**2)
    pdf: int = _size_field(50 * 1024**2)
    form: int = _size_field(70 * 1024**2)
    timestamp: int = _size_field(1024**2)


@dataclass(frozen=True)
class LogSettings:
    """``[log]``: what is logged, how, and where (stderr when no file)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    file: Path | None = None
    access: bool = True


@dataclass(frozen=True)
class SandboxSettings:
    """``[sandbox]``: where ``serve --sandbox`` serves its test PKI (TSA, OCSP, CRL)."""

    host: str = "127.0.0.1"
    #: Fixed when the sandbox is first generated: its certificates embed the URLs.
    port: int = field(default=7421, metadata={"check": _port})


@dataclass(frozen=True)
class Settings:
    """The whole configuration."""

    server: ServerSettings = field(default_factory=ServerSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    log: LogSettings = field(default_factory=LogSettings)
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    #: The file the settings came from, if any (not a TOML key).
    source: Path | None = field(default=None, metadata={"internal": True})


def is_loopback_host(host: str) -> bool:
    """Whether *host* (a name or an address) only reaches this machine."""
    if host.lower() in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings(file: Path | None, *, required: bool = False) -> Settings:
    """Read *file*; a missing file gives the defaults unless *required*."""
    if file is None:
        return Settings()
    if not file.exists():
        if required:
            raise ConfigError(file, None, "no such file")
        return Settings(source=file)
    try:
        with file.open("rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, None, f"not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(file, None, f"cannot be read: {exc.strerror}") from None
    settings = _build(Settings, document, "", _Context(file))
    return dataclasses.replace(settings, source=file)


@dataclass(frozen=True)
class _Context:
    file: Path

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.file, key, problem)


def _build(cls: type[Any], table: Mapping[str, Any], prefix: str, ctx: _Context) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in table:
        if key not in fields:
            hint = difflib.get_close_matches(key, list(fields), n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ctx.error(prefix + key, f"unknown setting{suggestion}")
    values: dict[str, Any] = {}
    for name, spec in fields.items():
        if name not in table:
            continue
        key = prefix + name
        try:
            value = _convert(hints[name], table[name], key, ctx, spec.metadata.get("parse"))
            check: Callable[[Any], None] | None = spec.metadata.get("check")
            if check is not None:
                check(value)
        except ValueError as exc:
            raise ctx.error(key, str(exc)) from None
        values[name] = value
    return cls(**values)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a table"
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return names.get(tp, "a path" if tp is Path else getattr(tp, "__name__", str(tp)))


def _convert(
    tp: Any,
    value: Any,
    key: str,
    ctx: _Context,
    parse: Callable[[Any], Any] | None = None,
) -> Any:
    if parse is not None:
        return parse(value)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        # Only ``X | None`` is used: TOML has no null, so the value is an X.
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(inner, value, key, ctx)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"expected {_describe(tp)} (got {value!r})")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ValueError(f"expected {_describe(tp)}")
        inner = typing.get_args(tp)[0]
        return tuple(
            _convert(inner, item, f"{key}[{index}]", ctx) for index, item in enumerate(value)
        )
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError("expected a table")
        return _build(tp, value, key + ".", ctx)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false (got {value!r})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer (got {value!r})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number (got {value!r})")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string (got {value!r})")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a path (got {value!r})")
        path = Path(value).expanduser()
        # Relative paths are relative to the file that names them, not the cwd of a service.
        return path if path.is_absolute() else (ctx.file.parent / path)
    raise ValueError(f"unsupported setting type {tp!r}")
