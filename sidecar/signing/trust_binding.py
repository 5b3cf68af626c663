"""The engines' :mod:`~sidecar.signing.sources` Protocols bound to :mod:`sidecar.trust`.

Thin: each call goes to the trust layer, whose errors become the engines' own
(:class:`~sidecar.signing.sources.UpstreamFailure`,
:class:`~sidecar.signing.sources.CertificateUnusable`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from asn1crypto import x509

from ..trust import (
    CertificateRevoked,
    RevocationError,
    RevocationService,
    RevocationUnavailable,
    TimeStampClient,
    TsaError,
    TsaTimeout,
    TsaUnavailable,
)
from .sources import CertificateUnusable, Timestamp, UpstreamFailure, ValidationData

__all__ = ["TrustTimestampSource", "TrustValidationDataSource"]

#: Seconds a caller is told to wait when revocation data cannot be had.
REVOCATION_RETRY_AFTER = 30


class TrustTimestampSource:
    """:class:`~sidecar.signing.sources.TimestampSource` over the TSA client (with failover)."""

    def __init__(self, client: TimeStampClient) -> None:
        self.client = client

    async def timestamp(self, data: bytes, digest: str = "sha256") -> Timestamp:
        try:
            token = await self.client.timestamp(hashlib.new(digest, data).digest(), digest)
        except TsaUnavailable as exc:
            raise UpstreamFailure(
                "unavailable", "tsa", str(exc), retry_after=max(1, math.ceil(exc.retry_after))
            ) from exc
        except TsaTimeout as exc:
            raise UpstreamFailure("timeout", "tsa", str(exc)) from exc
        except TsaError as exc:
            raise UpstreamFailure("error", "tsa", str(exc)) from exc
        carried = token.certificates
        signer = token.signer.sha256
        return Timestamp(
            token=token.der,
            tsa_certificate=next((c for c in carried if c.sha256 == signer), None),
            certificates=carried,
        )


class TrustValidationDataSource:
    """:class:`~sidecar.signing.sources.ValidationDataSource` over the revocation service."""

    def __init__(self, revocation: RevocationService) -> None:
        self.revocation = revocation

    async def collect(self, certificates: Sequence[x509.Certificate]) -> ValidationData:
        try:
            values = await self.revocation.revocation_info(list(certificates))
        except CertificateRevoked as exc:
            raise CertificateUnusable("revoked", str(exc)) from exc
        except RevocationUnavailable as exc:
            raise UpstreamFailure(
                "unavailable", "revocation", str(exc), retry_after=REVOCATION_RETRY_AFTER
            ) from exc
        except RevocationError as exc:
            raise CertificateUnusable("untrusted", str(exc)) from exc
        return ValidationData(
            certificates=tuple(x509.Certificate.load(der) for der in values.certificates),
            ocsp_responses=values.ocsp_responses,
            crls=values.crls,
        )
