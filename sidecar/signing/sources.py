"""What the signature engines need from the trust layer, as small Protocols.

The engines know standards, not HTTP: a B-T signature needs an RFC 3161 token
(:class:`TimestampSource`), a B-LT one the certificates and revocation data
that let a verifier validate the signer and the TSA offline
(:class:`ValidationDataSource`). ``sidecar.trust`` implements both (bound in
:mod:`sidecar.signing.trust_binding`); tests may bring their own.

An upstream that fails raises :class:`UpstreamFailure`: the API answers 502,
503 (with Retry-After) or 504 — an engine never falls back to a lower level.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from asn1crypto import x509

from ..errors import Refused, UpstreamError

__all__ = [
    "CertificateUnusable",
    "Timestamp",
    "TimestampSource",
    "UpstreamFailure",
    "ValidationData",
    "ValidationDataSource",
    "collect_for_signature",
]


class UpstreamFailure(UpstreamError):
    """The TSA or a revocation service could not give what the asked level needs.

    ``kind``: ``"error"`` (it answered with an error: 502), ``"unavailable"``
    (unreachable: 503), ``"timeout"`` (no answer in time: 504).
    """

    def __init__(
        self,
        kind: Literal["error", "unavailable", "timeout"],
        service: str,
        detail: str,
        *,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.service = service
        self.detail = detail
        self.retry_after = retry_after


class CertificateUnusable(Refused):
    """A certificate to be embedded is revoked or does not chain to a trust anchor.

    ``reason``: ``"revoked"`` or ``"untrusted"``. Signing stops: a B-LT signature
    whose own validation data condemn it would be worse than none.
    """

    def __init__(self, reason: Literal["revoked", "untrusted"], detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Timestamp:
    """A checked RFC 3161 token, and what the engines take from it (read once, when
    the reply was checked)."""

    #: The DER ``TimeStampToken`` (CMS ContentInfo).
    token: bytes
    #: The TSA's certificate, when the token carries it.
    tsa_certificate: x509.Certificate | None
    #: Every certificate the token carries.
    certificates: tuple[x509.Certificate, ...]


@runtime_checkable
class TimestampSource(Protocol):
    """An RFC 3161 time-stamping service (with failover, if it has several TSAs)."""

    async def timestamp(self, data: bytes, digest: str = "sha256") -> Timestamp:
        """A token over ``hash(data)``.

        The reply is already checked: status granted, nonce, message imprint,
        the TSA's signature and certificate chain. Raises :class:`UpstreamFailure`.
        """
        ...


@dataclass(frozen=True)
class ValidationData:
    """Certificates and revocation data, DER-encoded, for offline validation."""

    certificates: tuple[x509.Certificate, ...] = ()
    ocsp_responses: tuple[bytes, ...] = ()
    """DER ``OCSPResponse`` values."""
    crls: tuple[bytes, ...] = ()
    """DER ``CertificateList`` values."""
    notes: tuple[str, ...] = field(default=(), compare=False)

    def merge(self, other: ValidationData) -> ValidationData:
        """Both sets, each value once, first-seen order kept."""

        def unique(values: Sequence[bytes]) -> tuple[bytes, ...]:
            return tuple(dict.fromkeys(values))

        certs = {c.dump(): c for c in (*self.certificates, *other.certificates)}
        return ValidationData(
            tuple(certs.values()),
            unique((*self.ocsp_responses, *other.ocsp_responses)),
            unique((*self.crls, *other.crls)),
            (*self.notes, *other.notes),
        )


@runtime_checkable
class ValidationDataSource(Protocol):
    """Builds the chain of each certificate to a trust anchor and fetches its revocation data."""

    async def collect(self, certificates: Sequence[x509.Certificate]) -> ValidationData:
        """Everything needed to validate each of ``certificates`` offline.

        ``certificates`` are end-entity certificates followed by any intermediates
        already known. The answer holds every certificate of each path (anchor
        included) and, for each non-anchor certificate of each path, an OCSP
        response or a CRL (and the same for the OCSP responders' certificates,
        unless they carry id-pkix-ocsp-nocheck). Raises :class:`UpstreamFailure`
        when a needed piece cannot be had.
        """
        ...


async def collect_for_signature(
    source: ValidationDataSource,
    chain: Sequence[x509.Certificate],
    tsa_certificate: x509.Certificate | None,
    token_certificates: Sequence[x509.Certificate],
) -> ValidationData:
    """Validation data for a signer's chain (leaf first) and the TSA that stamped its
    signature, fetched concurrently: what a B-LT signature embeds, in either format."""
    if tsa_certificate is None:
        raise UpstreamFailure(
            "error", "tsa", "the timestamp token does not carry the TSA's certificate"
        )
    tsa_der = tsa_certificate.dump()
    signer_side, tsa_side = await asyncio.gather(
        source.collect(list(chain)),
        source.collect([tsa_certificate, *(c for c in token_certificates if c.dump() != tsa_der)]),
    )
    return signer_side.merge(tsa_side)
