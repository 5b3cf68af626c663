"""The trusted lists on disk: each list as fetched (XML signature included) and an index.

``<cache dir>/index.json`` maps a list's key (``EU`` for the LOTL, the territory code
for a member state's list) to its file, URL, fetch time and SHA-256. Files are written
atomically (temporary file, fsync, rename) so a crash mid-refresh leaves the previous
copy. Nothing read from here is trusted: :mod:`.source` verifies every list's signature
again on load.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ...paths import write_atomically

__all__ = ["CachedList", "ListCache"]

_INDEX = "index.json"


@dataclass(frozen=True)
class CachedList:
    key: str
    url: str
    fetched: datetime
    xml: str


class ListCache:
    """The directory holding the cached lists."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _index(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads((self.directory / _INDEX).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> CachedList | None:
        """The cached copy of *key*, or None if absent or damaged (its SHA-256 differs)."""
        entry = self._index().get(key)
        if not isinstance(entry, dict):
            return None
        try:
            data = (self.directory / entry["file"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                return None
            return CachedList(
                key, entry["url"], datetime.fromisoformat(entry["fetched"]), data.decode("utf-8")
            )
        except (OSError, KeyError, ValueError):
            return None

    def put(self, key: str, url: str, fetched: datetime, xml: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = xml.encode("utf-8")
        name = f"{key}.xml"
        write_atomically(self.directory / name, data)
        index = self._index()
        index[key] = {
            "file": name,
            "url": url,
            "fetched": fetched.isoformat(),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        write_atomically(
            self.directory / _INDEX, json.dumps(index, indent=1, sort_keys=True).encode()
        )

    def keys(self) -> list[str]:
        return sorted(self._index())
