"""Named API clients, their scopes, and the hashes of their bearer tokens.

A token is 32 random bytes (URL-safe base64), shown once when it is made; only its
SHA-256 is stored. A fast hash is enough for a high-entropy secret: there is nothing
to brute-force that would not be faster to guess directly. The file is re-read when
it changes on disk, so ``sidecar token create`` works while the daemon runs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from .errors import BadInput
from .logs import register_secret
from .paths import write_atomically

__all__ = ["Client", "ClientStore", "Scope", "TokenError"]


class Scope(StrEnum):
    SIGN = "sign"
    TIMESTAMP = "timestamp"
    FORWARD = "forward"
    VERIFY = "verify"
    ADMIN = "admin"


#: What the ``default`` client made on first start may do: everything but admin.
DEFAULT_SCOPES = frozenset(Scope) - {Scope.ADMIN}
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class TokenError(BadInput):
    """A client operation that cannot be done (bad name, unknown client...)."""


@dataclass(frozen=True)
class Client:
    name: str
    scopes: frozenset[Scope]
    created: str
    token_sha256: str

    def public(self) -> dict[str, object]:
        return {"name": self.name, "scopes": sorted(self.scopes), "created": self.created}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_scopes(values: Iterable[str]) -> frozenset[Scope]:
    scopes: set[Scope] = set()
    for value in values:
        for part in value.split(","):
            part = part.strip().lower()
            if not part:
                continue
            try:
                scopes.add(Scope(part))
            except ValueError:
                known = ", ".join(s.value for s in Scope)
                raise TokenError(f"unknown scope {part!r} (known: {known})") from None
    return frozenset(scopes)


class ClientStore:
    """The clients file (JSON), read lazily and re-read when it changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._clients: dict[str, Client] = {}

    @property
    def path(self) -> Path:
        return self._path

    def _load(self) -> dict[str, Client]:
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            self._stamp, self._clients = None, {}
            return self._clients
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            raw = json.loads(self._path.read_text("utf-8"))
            self._clients = {
                name: Client(
                    name=name,
                    scopes=frozenset(Scope(s) for s in entry["scopes"]),
                    created=entry["created"],
                    token_sha256=entry["token_sha256"],
                )
                for name, entry in raw.get("clients", {}).items()
            }
            self._stamp = stamp
        return self._clients

    def _save(self, clients: dict[str, Client]) -> None:
        payload = {
            "clients": {
                c.name: {
                    "scopes": sorted(c.scopes),
                    "created": c.created,
                    "token_sha256": c.token_sha256,
                }
                for c in clients.values()
            }
        }
        _write_private(self._path, json.dumps(payload, indent=2) + "\n")
        self._stamp = None

    def clients(self) -> list[Client]:
        with self._lock:
            return sorted(self._load().values(), key=lambda c: c.name)

    def authenticate(self, token: str) -> Client | None:
        """The client whose token this is, or None. Constant time per client."""
        digest = _digest(token)
        with self._lock:
            clients = list(self._load().values())
        found = None
        for client in clients:
            if hmac.compare_digest(client.token_sha256, digest):
                found = client
        return found

    def create(self, name: str, scopes: frozenset[Scope], *, replace: bool = False) -> str:
        """Make (or with *replace*, re-key) a client; returns its new token."""
        if not name or not set(name) <= _NAME_CHARS or len(name) > 64:
            raise TokenError(f"invalid client name {name!r}: use 1-64 of a-z, 0-9, '-', '_', '.'")
        if not scopes:
            raise TokenError("a client needs at least one scope")
        token = secrets.token_urlsafe(32)
        register_secret(token)
        with self._lock:
            clients = dict(self._load())
            if name in clients and not replace:
                raise TokenError(f"client {name!r} exists; revoke it first or use --replace")
            clients[name] = Client(
                name=name,
                scopes=scopes,
                created=datetime.now(UTC).isoformat(timespec="seconds"),
                token_sha256=_digest(token),
            )
            self._save(clients)
        return token

    def revoke(self, name: str) -> None:
        with self._lock:
            clients = dict(self._load())
            if name not in clients:
                raise TokenError(f"no client named {name!r}")
            del clients[name]
            self._save(clients)


def _write_private(path: Path, text: str) -> None:
    """Write *text* atomically to *path*, readable only by its owner (the temporary
    file :func:`~sidecar.paths.write_atomically` renames into place is mkstemp's 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomically(path, text.encode("utf-8"))


def ensure_default_client(store: ClientStore, token_file: Path) -> bool:
    """On first start (no client at all) make ``default`` and write its token file.

    Returns whether it did. The token file is the one place the token is shown.
    """
    if store.clients():
        return False
    token = store.create("default", DEFAULT_SCOPES)
    _write_private(token_file, token + "\n")
    return True
