"""Named API clients, their scopes, and the hashes of their bearer tokens.

A token is 32 random bytes (URL-safe base64), shown once when it is made; only its
SHA-256 is stored. A fast hash is enough for a high-entropy secret: there is nothing
to brute-force that would not be faster to guess directly. The file is re-read when
it changes on disk, so ``sidecar token create`` works while the daemon runs.

A client may also be limited to some signing keys (``keys``; absent: every key), be
known by its TLS client certificate (``cert_sha256``, the certificate's SHA-256
fingerprint; see ``[server] client_ca``), and have its own request rate
(``rate_limit``, over ``[server] rate_limit``). Entries written before these existed
read as "every key, no certificate, the daemon's rate".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from .errors import BadInput
from .keys.access import KeyAccess
from .logs import register_secret
from .paths import write_atomically
from .ratelimit import Rate, parse_rate

log = logging.getLogger("sidecar.clients")

__all__ = ["Client", "ClientStore", "Scope", "TokenError", "parse_fingerprint", "parse_key_ids"]


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
    #: The key ids this client may sign with; ``None``: every key.
    keys: frozenset[str] | None = None
    #: SHA-256 of the DER of the client's TLS certificate (lower-case hex), if any.
    cert_sha256: str | None = None
    #: Its own rate (``"N/s"``, ``"N/min"``) instead of ``[server] rate_limit``.
    rate_limit: str | None = None

    @property
    def key_access(self) -> KeyAccess:
        return KeyAccess(self.name, self.keys)

    @property
    def rate(self) -> Rate | None:
        return parse_rate(self.rate_limit) if self.rate_limit else None

    def public(self) -> dict[str, object]:
        return {
            "name": self.name,
            "scopes": sorted(self.scopes),
            "created": self.created,
            "keys": sorted(self.keys) if self.keys is not None else None,
            "cert_sha256": self.cert_sha256,
            "rate_limit": self.rate_limit,
        }

    def stored(self) -> dict[str, object]:
        """Its entry in the clients file (the optional settings only when set)."""
        entry: dict[str, object] = {
            "scopes": sorted(self.scopes),
            "created": self.created,
            "token_sha256": self.token_sha256,
        }
        if self.keys is not None:
            entry["keys"] = sorted(self.keys)
        if self.cert_sha256 is not None:
            entry["cert_sha256"] = self.cert_sha256
        if self.rate_limit is not None:
            entry["rate_limit"] = self.rate_limit
        return entry

    @classmethod
    def from_stored(cls, name: str, entry: dict[str, Any]) -> Client:
        """The client of an entry; ValueError when the entry is not usable."""
        keys = entry.get("keys")
        if keys is not None and not (
            isinstance(keys, list) and all(isinstance(k, str) for k in keys)
        ):
            raise ValueError("'keys' must be a list of key ids")
        if entry.get("rate_limit") is not None:
            parse_rate(entry["rate_limit"])
        return cls(
            name=name,
            scopes=frozenset(Scope(s) for s in entry["scopes"]),
            created=entry["created"],
            token_sha256=entry["token_sha256"],
            keys=frozenset(keys) if keys is not None else None,
            cert_sha256=entry.get("cert_sha256"),
            rate_limit=entry.get("rate_limit"),
        )


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
            self._clients = {}
            for name, entry in raw.get("clients", {}).items():
                try:
                    self._clients[name] = Client.from_stored(name, entry)
                except (KeyError, TypeError, ValueError) as exc:
                    # A hand-edited entry gone wrong: that client is refused (401),
                    # not let in with fewer limits than meant, and the log says why.
                    log.warning(
                        "%s: client %r is unusable and refused: %s", self._path.name, name, exc
                    )
            self._stamp = stamp
        return self._clients

    def _save(self, clients: dict[str, Client]) -> None:
        payload = {"clients": {c.name: c.stored() for c in clients.values()}}
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

    def by_certificate(self, cert_sha256: str) -> Client | None:
        """The client registered with this certificate fingerprint, or None."""
        with self._lock:
            clients = list(self._load().values())
        return next((c for c in clients if c.cert_sha256 == cert_sha256), None)

    def create(
        self,
        name: str,
        scopes: frozenset[Scope],
        *,
        replace: bool = False,
        keys: frozenset[str] | None = None,
        cert_sha256: str | None = None,
        rate_limit: str | None = None,
    ) -> str:
        """Make (or with *replace*, re-key) a client; returns its new token.

        *keys*: the key ids it may sign with (``None``: every key); *cert_sha256*:
        its TLS client certificate's fingerprint; *rate_limit*: its own rate.
        """
        if not name or not set(name) <= _NAME_CHARS or len(name) > 64:
            raise TokenError(f"invalid client name {name!r}: use 1-64 of a-z, 0-9, '-', '_', '.'")
        if not scopes:
            raise TokenError("a client needs at least one scope")
        if keys is not None and not keys:
            raise TokenError("--keys names no key (leave it out for every key)")
        if rate_limit is not None:
            try:
                parse_rate(rate_limit)
            except ValueError as exc:
                raise TokenError(f"rate limit {rate_limit!r}: {exc}") from None
        token = secrets.token_urlsafe(32)
        register_secret(token)
        with self._lock:
            clients = dict(self._load())
            if name in clients and not replace:
                raise TokenError(f"client {name!r} exists; revoke it first or use --replace")
            if cert_sha256 is not None and any(
                c.cert_sha256 == cert_sha256 for c in clients.values() if c.name != name
            ):
                raise TokenError("another client has this certificate")
            clients[name] = Client(
                name=name,
                scopes=scopes,
                created=datetime.now(UTC).isoformat(timespec="seconds"),
                token_sha256=_digest(token),
                keys=keys,
                cert_sha256=cert_sha256,
                rate_limit=rate_limit,
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


def parse_key_ids(values: Iterable[str]) -> frozenset[str]:
    """``--keys dr-a,dr-b`` (repeatable) → the key ids."""
    return frozenset(p.strip() for v in values for p in v.split(",") if p.strip())


_HEX = frozenset("0123456789abcdef")


def parse_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as ``openssl x509 -fingerprint -sha256`` prints it (with
    colons, any case, optionally ``sha256 Fingerprint=`` before) → 64 lower-case hex."""
    value = text.rpartition("=")[2].replace(":", "").strip().lower()
    if len(value) != 64 or not set(value) <= _HEX:
        raise TokenError(f"{text!r} is not a SHA-256 fingerprint (64 hex digits)")
    return value


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
