"""Which keys the caller of an operation may sign with (a physician's workstation
client with that physician's key).

The rule travels with the operation as a context variable, like the PIN of
:mod:`.authorisation`: the API door (the token middleware) sets it for an
authenticated client, and :meth:`~sidecar.keys.registry.KeyRegistry.get` — the one
point where every signing route, a batch and the CNS deposit of an unsigned fee note
choose their key — resolves and checks the key through :func:`choose_key`. Code that
runs for no client (the CLI, the doctor, the CNS worker) sees no rule: every key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

from ..errors import Refused
from .errors import KeyLayerError

__all__ = [
    "KeyAccess",
    "KeyNotAllowed",
    "check_key_access",
    "choose_key",
    "current_key_access",
    "key_access",
    "key_visible",
]


@dataclass(frozen=True)
class KeyAccess:
    """The keys one client may use; ``keys=None``: every key (a client made without
    ``--keys``, and every client before the setting existed)."""

    client: str
    keys: frozenset[str] | None = None

    def allows(self, key_id: str) -> bool:
        return self.keys is None or key_id in self.keys


class KeyNotAllowed(KeyLayerError, Refused, PermissionError):
    """The client may not sign with this key (``reason="not_allowed"``), or named no
    key while the default key is not one of its several (``reason="key_required"``).

    The detail names the client and the key asked for, never the client's other keys.
    """

    def __init__(
        self, client: str, key_id: str | None, reason: Literal["not_allowed", "key_required"]
    ) -> None:
        if reason == "not_allowed":
            detail = f"client {client!r} may not sign with key {key_id!r}"
        else:
            detail = f"client {client!r} may use several keys: name one with ?key="
        super().__init__(detail)
        self.client = client
        self.key_id = key_id
        self.reason: Literal["not_allowed", "key_required"] = reason


_CURRENT: ContextVar[KeyAccess | None] = ContextVar("sidecar_key_access", default=None)


def current_key_access() -> KeyAccess | None:
    """The rule of the operation under way, or ``None`` (no client: every key)."""
    return _CURRENT.get()


@contextlib.contextmanager
def key_access(access: KeyAccess | None) -> Iterator[None]:
    """Run the block (and the tasks it starts) under *access*."""
    token = _CURRENT.set(access)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def check_key_access(access: KeyAccess | None, key_id: str) -> None:
    """Raise :class:`KeyNotAllowed` unless *access* lets its client use *key_id*."""
    if access is not None and not access.allows(key_id):
        raise KeyNotAllowed(access.client, key_id, "not_allowed")


def choose_key(access: KeyAccess | None, key_id: str | None, default: str | None) -> str | None:
    """The key an operation uses: *key_id* when named (checked), else the default key
    when the client may use it, else the client's one key; ``None`` when there is no
    key to choose (the caller's :class:`~.errors.KeyNotFound`).

    A client of several keys, none of them the default, must name one
    (:class:`KeyNotAllowed` ``key_required``): guessing would sign in another
    physician's name.
    """
    if key_id is not None:
        check_key_access(access, key_id)
        return key_id
    if access is None or access.keys is None:
        return default
    if default is not None and default in access.keys:
        return default
    if len(access.keys) == 1:
        return next(iter(access.keys))
    raise KeyNotAllowed(access.client, None, "key_required")


def key_visible(key_id: str) -> bool:
    """Whether the current client (if any) may use *key_id*: what it is shown."""
    access = _CURRENT.get()
    return access is None or access.allows(key_id)
