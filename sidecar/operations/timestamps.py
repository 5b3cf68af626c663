"""Timestamp: a caller's RFC 3161 request relayed, or some bytes' digest timestamped.

Either way the TSA's reply is returned only after the trust layer's checked client
accepted it (:func:`~sidecar.trust.tsa.check_reply`); its failures are
:class:`~sidecar.trust.tsa.TsaError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from asn1crypto import tsp

from ..trust.tsa import RelayedReply

if TYPE_CHECKING:
    from .services import Services

__all__ = ["relay_timestamp", "timestamp_data"]


async def timestamp_data(services: Services, data: bytes, algorithm: str) -> RelayedReply:
    """Hash *data* with *algorithm* (``sha256``...) and have the TSA timestamp it."""
    return await services.trust.tsa.timestamp_data(data, algorithm)


async def relay_timestamp(services: Services, request: tsp.TimeStampReq) -> RelayedReply:
    """Send a caller's TimeStampReq as it is; the TSA's reply once checked."""
    return await services.trust.tsa.relay(request)
