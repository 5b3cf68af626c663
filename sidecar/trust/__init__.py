"""The trust layer: trust anchors, the RFC 3161 client, revocation data (OCSP/CRL), and
the EU trusted lists (:mod:`sidecar.trust.lists`: anchors and qualification).

Engines use :class:`TrustServices`: ``tsa.timestamp(digest, algorithm)`` or
``tsa.timestamper()`` (pyHanko) for B-T, ``revocation.revocation_info(chain)`` or
``revocation.validation_context()`` (pyHanko) for B-LT.
"""

from .anchors import AnchorError, TrustAnchors, load_certificates
from .breaker import CircuitBreaker
from .revocation import (
    CertificateRevoked,
    RevocationCache,
    RevocationError,
    RevocationService,
    RevocationUnavailable,
    RevocationValues,
)
from .service import TrustServices, open_trust
from .tsa import (
    CheckedTimeStamper,
    RelayedReply,
    TimeStampClient,
    TimeStampToken,
    TsaEndpoint,
    TsaError,
    TsaRejected,
    TsaReplyError,
    TsaTimeout,
    TsaUnavailable,
)

__all__ = [
    "AnchorError",
    "CertificateRevoked",
    "CheckedTimeStamper",
    "CircuitBreaker",
    "RelayedReply",
    "RevocationCache",
    "RevocationError",
    "RevocationService",
    "RevocationUnavailable",
    "RevocationValues",
    "TimeStampClient",
    "TimeStampToken",
    "TrustAnchors",
    "TrustServices",
    "TsaEndpoint",
    "TsaError",
    "TsaRejected",
    "TsaReplyError",
    "TsaTimeout",
    "TsaUnavailable",
    "load_certificates",
    "open_trust",
]
