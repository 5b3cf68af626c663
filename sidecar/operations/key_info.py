"""The signing keys as the daemon describes them (``GET /v1/keys``, ``sidecar keys list``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..keys import KeyInfo
from ..keys.access import key_visible

if TYPE_CHECKING:
    from .services import Services

__all__ = ["describe_keys", "key_info_json"]


def describe_keys(services: Services) -> list[dict[str, Any]]:
    """The keys the calling client may use (:mod:`sidecar.keys.access`: not other
    physicians'), as :func:`key_info_json` describes them."""
    return [key_info_json(info) for info in services.keys.describe() if key_visible(info.id)]


def key_info_json(info: KeyInfo) -> dict[str, Any]:
    """One key's description, as JSON (no secret: no PIN, no private key)."""
    days = None
    if info.not_after is not None:
        days = (info.not_after - datetime.now(UTC)).days
    return {
        "id": info.id,
        "backend": info.backend,
        "default": info.default,
        "description": info.description,
        "key_type": info.key_type,
        "subject": info.subject,
        "issuer": info.issuer,
        "serial": info.serial,
        "not_before": info.not_before.isoformat() if info.not_before else None,
        "not_after": info.not_after.isoformat() if info.not_after else None,
        "days_to_expiry": days,
        "certificate_status": info.certificate_status,
        "unlocked": info.unlocked,
        "locked_reason": info.locked_reason,
        "locked_detail": info.locked_detail,
        "pin_per_operation": info.pin_per_operation,
        "opened": info.opened,
    }
