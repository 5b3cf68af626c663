"""Where PINs and passphrases come from: the OS secret store or the config.

A secret is fetched when needed and not kept by this module. It never
appears in a log record or an exception message.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Literal

from ..errors import KeyUnavailable
from .key_settings import KEYRING_SERVICE, KeyConfig

__all__ = [
    "SecretUnavailable",
    "delete_stored_secret",
    "read_secret",
    "read_stored_secret",
    "secret_is_generated",
    "store_secret",
]

logger = logging.getLogger(__name__)

_warned_config_secrets: set[str] = set()


def secret_is_generated(key_id: str) -> None:
    """The key's in-config secret was made by sidecar itself (the sandbox): no warning."""
    _warned_config_secrets.add(key_id)


class SecretUnavailable(KeyUnavailable):
    """No secret could be obtained; ``detail`` says why, for :class:`KeyLocked`."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def read_secret(config: KeyConfig, kind: Literal["PIN", "passphrase"]) -> str | None:
    """The key's PIN or passphrase, or ``None`` when none is needed.

    ``None`` means "no stored secret": a PKCS#12 file without a passphrase, a
    pinpad, or a PIN that comes with each operation (``pin_source = "request"``).
    Raises :class:`SecretUnavailable` when one is needed but missing.
    """
    source = config.pin_source if kind == "PIN" else config.passphrase_source
    if source in ("pinpad", "none", "request"):
        return None
    if source == "config":
        if config.id not in _warned_config_secrets:
            _warned_config_secrets.add(config.id)
            logger.warning(
                "key %s: the %s is stored in the configuration file; the OS secret store "
                "(keyring, service %r, entry %r) is safer",
                config.id,
                kind,
                KEYRING_SERVICE,
                config.secret_entry,
            )
        return config.pin if kind == "PIN" else config.passphrase
    return read_stored_secret(config.secret_entry, kind)


def read_stored_secret(entry: str, what: str) -> str:
    """The secret stored under *entry* (service ``"sidecar"``) in the OS secret store.

    *what* names it in the error ("PIN", "TSA password"...). Used for the keys' PINs
    and passphrases and for the TSA and CNS credentials a configuration names with
    ``*_keyring`` settings. Raises :class:`SecretUnavailable`.
    """
    keyring = _keyring()
    try:
        secret = keyring.get_password(KEYRING_SERVICE, entry)
    except keyring.errors.KeyringError as exc:
        raise SecretUnavailable(
            f"the OS secret store is not available ({type(exc).__name__}); "
            f"store the {what} under service {KEYRING_SERVICE!r}, entry {entry!r}"
        ) from None
    if secret is None:
        raise SecretUnavailable(
            f"no {what} in the OS secret store under service {KEYRING_SERVICE!r}, entry {entry!r}"
        )
    return secret


def _keyring() -> ModuleType:
    """The keyring package, imported on first use: it costs a tenth of the daemon's
    start, and most installations use no keyring."""
    import keyring
    import keyring.errors

    return keyring


def store_secret(entry: str, secret: str) -> None:
    """Put *secret* under *entry* (service ``"sidecar"``) in the OS secret store.

    Raises :class:`SecretUnavailable` when there is no usable secret store; the
    message names the entry, never the secret.
    """
    keyring = _keyring()
    try:
        keyring.set_password(KEYRING_SERVICE, entry, secret)
    except keyring.errors.KeyringError as exc:
        raise SecretUnavailable(
            f"the OS secret store is not available ({type(exc).__name__}) to store "
            f"entry {entry!r} of service {KEYRING_SERVICE!r}"
        ) from None


def delete_stored_secret(entry: str) -> None:
    """Remove *entry* from the OS secret store; an absent entry is not an error."""
    keyring = _keyring()
    try:
        keyring.delete_password(KEYRING_SERVICE, entry)
    except keyring.errors.PasswordDeleteError:
        pass
    except keyring.errors.KeyringError as exc:
        raise SecretUnavailable(
            f"the OS secret store is not available ({type(exc).__name__})"
        ) from None
