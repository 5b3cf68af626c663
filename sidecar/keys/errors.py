"""Typed failures of the key layer.

Each belongs to one family of :mod:`sidecar.errors` (``KeyLocked``: the key is
unavailable; ``CertificateNotValid``: refused; ``KeyConfigError``: misconfigured),
which the API layer alone turns into an answer; each carries a short
machine-readable ``reason`` and a human ``detail``. None of
them ever carries a PIN, a passphrase or key material.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ..errors import KeyUnavailable, Misconfigured, NotFound, Refused, SidecarError

__all__ = [
    "CertificateNotValid",
    "KeyConfigError",
    "KeyLayerError",
    "KeyLocked",
    "KeyNotFound",
    "LockReason",
    "UnsupportedAlgorithm",
]

LockReason = Literal[
    "token_absent",
    "pin_missing",
    "pin_incorrect",
    "pin_final_try",
    "pin_locked",
    "pinpad_unavailable",
    "passphrase_missing",
    "passphrase_incorrect",
    "key_not_found",
    "token_error",
]


class KeyLayerError(SidecarError):
    """Base of every error raised by :mod:`sidecar.keys`; each subclass names its
    family (:mod:`sidecar.errors`). Never raised as such."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class KeyConfigError(KeyLayerError, Misconfigured):
    """A key cannot be set up: bad configuration, unusable file or module.

    ``path`` names the file at fault when there is one.
    """

    def __init__(self, detail: str, *, key_id: str | None = None, path: str | None = None) -> None:
        super().__init__(detail)
        self.key_id = key_id
        self.path = path


class KeyLocked(KeyLayerError, KeyUnavailable):
    """The key exists but cannot sign now (423 ``key_locked``).

    ``retries_left`` is set only when the token says so precisely (``0`` when
    locked, ``1`` on CKF_USER_PIN_FINAL_TRY); ``token_flags`` lists the
    CKF_USER_PIN_* flags the token reported, e.g. ``("CKF_USER_PIN_COUNT_LOW",)``.
    """

    def __init__(
        self,
        reason: LockReason,
        detail: str,
        *,
        key_id: str | None = None,
        retries_left: int | None = None,
        token_flags: tuple[str, ...] = (),
    ) -> None:
        super().__init__(detail)
        self.reason: LockReason = reason
        self.key_id = key_id
        self.retries_left = retries_left
        self.token_flags = token_flags


class CertificateNotValid(KeyLayerError, Refused):
    """The signing certificate is expired or not yet valid (422)."""

    def __init__(
        self,
        reason: Literal["expired", "not_yet_valid"],
        detail: str,
        *,
        key_id: str | None = None,
        not_before: datetime,
        not_after: datetime,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.key_id = key_id
        self.not_before = not_before
        self.not_after = not_after


class KeyNotFound(KeyLayerError, NotFound, LookupError):
    """No key with this id is configured."""

    def __init__(self, key_id: str | None) -> None:
        if key_id is None:
            super().__init__("no key named and no default key is configured")
        else:
            super().__init__(f"no key {key_id!r} is configured")
        self.key_id = key_id


class UnsupportedAlgorithm(KeyLayerError, Misconfigured, ValueError):
    """The digest or padding asked for does not fit this key."""
