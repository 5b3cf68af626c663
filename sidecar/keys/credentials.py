"""Where PINs and passphrases come from: the OS secret store or the config.

A secret is fetched when needed and not kept by this module. It never
appears in a log record or an exception message.
"""

from __future__ import annotations

import logging
from typing import Literal

from .config import KEYRING_SERVICE, KeyConfig

__all__ = ["SecretUnavailable", "read_secret", "secret_is_generated"]

logger = logging.getLogger(__name__)

_warned_config_secrets: set[str] = set()


def secret_is_generated(key_id: str) -> None:
    """The key's in-config secret was made by sidecar itself (the sandbox): no warning."""
    _warned_config_secrets.add(key_id)


class SecretUnavailable(Exception):
    """No secret could be obtained; ``detail`` says why, for :class:`KeyLocked`."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def read_secret(config: KeyConfig, kind: Literal["PIN", "passphrase"]) -> str | None:
    """The key's PIN or passphrase, or ``None`` when none is needed.

    ``None`` means "no secret": a PKCS#12 file without a passphrase, or a
    pinpad. Raises :class:`SecretUnavailable` when one is needed but missing.
    """
    source = config.pin_source if kind == "PIN" else config.passphrase_source
    if source == "pinpad" or source == "none":
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
    entry = config.secret_entry
    # Imported on first use: it costs a tenth of the daemon's start, most use no keyring.
    import keyring
    import keyring.errors

    try:
        secret = keyring.get_password(KEYRING_SERVICE, entry)
    except keyring.errors.KeyringError as exc:
        raise SecretUnavailable(
            f"the OS secret store is not available ({type(exc).__name__}); "
            f"store the {kind} under service {KEYRING_SERVICE!r}, entry {entry!r}"
        ) from None
    if secret is None:
        raise SecretUnavailable(
            f"no {kind} in the OS secret store under service {KEYRING_SERVICE!r}, entry {entry!r}"
        )
    return secret
