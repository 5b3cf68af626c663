"""docs/production.md: every TOML example loads as ``serve`` would load it, every
setting it names exists, and every setting has an example there."""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest

from sidecar.config import Settings, load_settings
from sidecar.server import validate_for_serve

DOC = Path(__file__).resolve().parent.parent / "docs" / "production.md"
README = DOC.parent.parent / "README.md"


def toml_blocks() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


def setting_paths(cls: type[Any] = Settings, prefix: str = "") -> set[str]:
    """Every dotted setting of the configuration (tables of tables, arrays of tables)."""
    hints = typing.get_type_hints(cls)
    paths: set[str] = set()
    for spec in dataclasses.fields(cls):
        if spec.metadata.get("internal"):
            continue
        tp = hints[spec.name]
        args = typing.get_args(tp)
        inner = args[0] if typing.get_origin(tp) is tuple and args else tp
        if dataclasses.is_dataclass(inner):
            paths |= setting_paths(inner, f"{prefix}{spec.name}.")  # type: ignore[arg-type]
        else:
            paths.add(prefix + spec.name)
    return paths


def document_paths(table: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for key, value in table.items():
        if isinstance(value, dict):
            paths |= document_paths(value, f"{prefix}{key}.")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                paths |= document_paths(item, f"{prefix}{key}.")
        else:
            paths.add(prefix + key)
    return paths


@pytest.mark.parametrize("index", range(len(toml_blocks())))
def test_each_example_is_accepted(index: int, tmp_path: Path) -> None:
    block = toml_blocks()[index]
    file = tmp_path / "sidecar.toml"
    file.write_text(block, encoding="utf-8")
    settings = load_settings(file, required=True)  # raises ConfigError on any mistake
    if settings.server.tls_cert is None:
        # The TLS example names a certificate only a real machine has.
        validate_for_serve(settings)


def test_every_setting_has_an_example() -> None:
    shown: set[str] = set()
    for block in toml_blocks():
        shown |= document_paths(tomllib.loads(block))
    missing = setting_paths() - shown
    assert not missing, f"settings with no example in docs/production.md: {sorted(missing)}"
    assert shown <= setting_paths()


def test_the_readme_links_it() -> None:
    assert "(docs/production.md)" in README.read_text(encoding="utf-8")
