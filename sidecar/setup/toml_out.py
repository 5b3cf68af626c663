"""Settings → ``sidecar.toml`` text: only what differs from the defaults.

Rendering the :class:`~sidecar.config.Settings` dataclasses themselves (rather
than a hand-built dictionary) means a written file can only name settings that
exist; the file is then read back with the loader ``serve`` uses.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import Settings
from ..keys import KeyConfig

__all__ = ["render_settings", "settings_document"]


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _changed_fields(value)
    return value


def _default_of(spec: dataclasses.Field[Any]) -> Any:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return dataclasses.MISSING


def _said_anyway(obj: Any) -> set[str]:
    """Defaults worth writing: where a key's PIN or passphrase comes from."""
    if isinstance(obj, KeyConfig):
        return {"pin_source"} if obj.backend == "pkcs11" else {"passphrase_source"}
    return set()


def _changed_fields(obj: Any) -> dict[str, Any]:
    table: dict[str, Any] = {}
    anyway = _said_anyway(obj)
    for spec in dataclasses.fields(obj):
        if spec.metadata.get("internal"):
            continue
        value = getattr(obj, spec.name)
        if value == _default_of(spec) and spec.name not in anyway:
            continue
        plain = _plain(value)
        if plain == {}:
            continue
        table[spec.name] = plain
    return table


def settings_document(settings: Settings) -> dict[str, Any]:
    """The TOML document (nested dicts) of the settings that are not defaults."""
    return _changed_fields(settings)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string (same escapes, \\uXXXX included).
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _emit(table: Mapping[str, Any], path: list[str], header: str | None, out: list[str]) -> None:
    scalars = [
        (k, v) for k, v in table.items() if not isinstance(v, dict) and not _is_table_array(v)
    ]
    if header is not None and (scalars or header.startswith("[[")):
        out.extend(["", header])
    out.extend(f"{key} = {_value(value)}" for key, value in scalars)
    for key, value in table.items():
        name = ".".join([*path, key])
        if isinstance(value, dict):
            _emit(value, [*path, key], f"[{name}]", out)
        elif _is_table_array(value):
            for item in value:
                _emit(item, [*path, key], f"[[{name}]]", out)


def render_settings(settings: Settings, *, comment: str = "") -> str:
    """``sidecar.toml`` text for *settings*, with *comment* lines on top."""
    out = [f"# {line}" if line else "#" for line in comment.splitlines()]
    _emit(settings_document(settings), [], None, out)
    return "\n".join(out).lstrip("\n") + "\n"
