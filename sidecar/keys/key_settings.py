"""Configuration of one signing key, as the ``[[keys]]`` tables of sidecar.toml.

One flat dataclass for both backends, so that the TOML loader can map table
keys to fields by name; :meth:`KeyConfig.validate` checks the combination.

Secrets: ``pin`` and ``passphrase`` are accepted in the file because some
practices have no usable OS secret store, but the OS secret store (``keyring``,
service ``"sidecar"``, entry ``keyring_entry`` or the key's ``id``) is the
intended place. They are excluded from ``repr`` so that a logged config never
shows them.

Example::

    [[keys]]
    id = "dr-muller"
    backend = "pkcs11"
    module = "C:/Program Files/Thales/Classic Client/BIN/gclib.dll"
    token_label = "LuxTrust"
    key_label = "Signature"
    pin_source = "pinpad"
    default = true
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import KeyConfigError

__all__ = ["KEYRING_SERVICE", "KeyConfig"]

KEYRING_SERVICE = "sidecar"
"""Service name of sidecar's entries in the OS secret store."""

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX_PATTERN = re.compile(r"^(?:[0-9A-Fa-f]{2})+$")


@dataclass(frozen=True)
class KeyConfig:
    """One signing key: a PKCS#12 file or a key on a PKCS#11 token."""

    id: str
    """Stable identifier used by API callers (``key`` parameter) and in logs."""
    backend: Literal["pkcs12", "pkcs11"]
    default: bool = False
    """The key used when a request names none; at most one key has it."""
    description: str = ""
    """Who the key belongs to, e.g. the physician's name; shown in GET /v1/keys."""
    keyring_entry: str = ""
    """Entry name in the OS secret store; empty means the key's ``id``."""
    chain: list[Path] = field(default_factory=list)
    """Extra certificate files (PEM or DER) completing the chain to the root."""

    # PKCS#12
    path: Path | None = None
    """The .p12/.pfx file."""
    passphrase_source: Literal["keyring", "config", "none"] = "keyring"
    passphrase: str | None = field(default=None, repr=False)

    # PKCS#11
    module: Path | None = None
    """The PKCS#11 library (.so/.dll/.dylib) of the token's middleware."""
    token_label: str | None = None
    token_serial: str | None = None
    key_label: str | None = None
    key_id: str | None = None
    """CKA_ID of the private key, in hex."""
    cert_label: str | None = None
    """CKA_LABEL of the certificate when it differs from the key's."""
    cert_id: str | None = None
    """CKA_ID of the certificate in hex, when it differs from the key's."""
    pin_source: Literal["keyring", "config", "pinpad", "request"] = "keyring"
    """Where the user PIN comes from. ``"request"``: only with each operation (a
    request's or a batch's authorisation, :mod:`sidecar.keys.authorisation`), never
    stored. A key with CKA_ALWAYS_AUTHENTICATE takes its per-signature PIN from the
    operation (or the pinpad) whatever this says: a stored PIN is not used for it."""
    pin: str | None = field(default=None, repr=False)
    load: Literal["start", "first_use"] = "start"
    """When the key is opened: at the daemon's start, or on the first operation that
    uses it (an HSM holding one key per physician: no session for keys not in use)."""

    def __post_init__(self) -> None:
        self.validate()

    @property
    def secret_entry(self) -> str:
        """Entry name of this key's PIN or passphrase in the OS secret store."""
        return self.keyring_entry or self.id

    def validate(self) -> None:
        """Raise :class:`KeyConfigError` when the fields do not make a usable key."""

        def fail(detail: str) -> KeyConfigError:
            return KeyConfigError(f"key {self.id!r}: {detail}", key_id=self.id)

        if not _ID_PATTERN.match(self.id):
            raise fail("id must be 1-64 letters, digits, '.', '_' or '-'")
        if self.backend == "pkcs12":
            if self.path is None:
                raise fail("backend 'pkcs12' needs 'path' (the .p12/.pfx file)")
            if self.passphrase_source == "config" and self.passphrase is None:
                raise fail("passphrase_source = 'config' but no 'passphrase' is set")
            if self.passphrase_source != "config" and self.passphrase is not None:
                raise fail("'passphrase' is set but passphrase_source is not 'config'")
            pkcs11_only = ("module", "token_label", "token_serial", "key_label", "key_id", "pin")
            for name in pkcs11_only:
                if getattr(self, name) is not None:
                    raise fail(f"{name!r} applies to backend 'pkcs11' only")
        elif self.backend == "pkcs11":
            if self.module is None:
                raise fail("backend 'pkcs11' needs 'module' (the token's PKCS#11 library)")
            if self.key_label is None and self.key_id is None:
                raise fail("backend 'pkcs11' needs 'key_label' or 'key_id'")
            for name in ("key_id", "cert_id"):
                value = getattr(self, name)
                if value is not None and not _HEX_PATTERN.match(value):
                    raise fail(f"{name!r} must be hexadecimal, e.g. '01' or 'a1b2'")
            if self.pin_source == "config" and self.pin is None:
                raise fail("pin_source = 'config' but no 'pin' is set")
            if self.pin_source != "config" and self.pin is not None:
                raise fail("'pin' is set but pin_source is not 'config'")
            if self.path is not None or self.passphrase is not None:
                raise fail("'path' and 'passphrase' apply to backend 'pkcs12' only")
        else:
            raise fail(f"unknown backend {self.backend!r} (expected 'pkcs12' or 'pkcs11')")
