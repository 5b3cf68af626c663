"""Files that ship with sidecar: form profiles and stand-in XSDs, trust anchors, service files.

In the repository they live at the top level (``profiles/``, ``certs/``,
``service/``: the source of truth). Building a wheel copies them into this package
(``sidecar/data/<name>/``, see setup.py), so an installed sidecar finds them here;
a source checkout or an editable install finds the top-level directories.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["RESOURCE_DIRS", "resource_dir"]

#: The top-level directories that are package data.
RESOURCE_DIRS = ("profiles", "certs", "service")

_HERE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The directory holding the shipped ``profiles``, ``certs`` or ``service`` files."""
    if name not in RESOURCE_DIRS:
        raise ValueError(f"unknown resource directory {name!r} (one of {RESOURCE_DIRS})")
    installed = _HERE / name
    if installed.is_dir():
        return installed
    checkout = _HERE.parent.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"sidecar's {name}/ files are missing from this installation")
