"""Qualification of a signer certificate and of a timestamp, from the trusted lists.

In the spirit of ETSI TS 119 615 and the EU DSS "qualification" report: the signer's
certificate, judged by pyHanko's :class:`QualificationAssessor` (QC statements, the
CA/QC service granted on its chain at the time, the list's qualifiers), is one of

- ``QESig`` / ``QESeal``: qualified certificate for e-signatures / e-seals, key in a QSCD;
- ``AdESig-QC`` / ``AdESeal-QC``: qualified certificate, no QSCD;
- ``AdESig``: a chain to no CA/QC service granted at the time, or a certificate that is
  not qualified (or qualified for web authentication only);
- ``n/a``: no trusted list in use, so nothing can be said.

A timestamp is qualified when one certificate of its TSA's chain is the digital
identity of a TSA/QTST service granted at the token's genTime.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asn1crypto import x509
from pyhanko.sign.validation.qualified.assess import QualificationAssessor
from pyhanko.sign.validation.qualified.tsp import QcCertType
from pyhanko_certvalidator.authority import AuthorityWithCert, CertTrustAnchor
from pyhanko_certvalidator.path import ValidationPath

from .source import TrustedLists

__all__ = [
    "SignerQualification",
    "TimestampQualification",
    "chain_of",
    "qualify_signer",
    "qualify_timestamp",
]

NOT_APPLICABLE = "n/a"


@dataclass(frozen=True)
class SignerQualification:
    #: QESig, QESeal, AdESig-QC, AdESeal-QC, AdESig or n/a.
    qualification: str
    #: When it was judged (the signing time, or the best proof of existence).
    at: datetime
    qualified_certificate: bool = False
    #: Whether the certificate or the list says the key is in a QSCD (None: not known).
    qscd: bool | None = None
    #: ``esign``, ``eseal`` or ``web``, for a qualified certificate.
    certificate_type: str | None = None
    #: The trusted list's CA/QC service the chain goes through, if any.
    service: str | None = None

    @property
    def qualified_signature(self) -> bool:
        return self.qualification in ("QESig", "QESeal")

    def as_json(self) -> dict[str, Any]:
        return {
            "qualification": self.qualification,
            "at": self.at.isoformat(),
            "qualified_certificate": self.qualified_certificate,
            "qscd": self.qscd,
            "certificate_type": self.certificate_type,
            "service": self.service,
        }


@dataclass(frozen=True)
class TimestampQualification:
    #: Whether the TSA was a granted TSA/QTST at genTime (None: no list in use).
    qualified: bool | None
    gen_time: datetime
    service: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "qualified": self.qualified,
            "gen_time": self.gen_time.isoformat(),
            "service": self.service,
        }


_TYPES = {QcCertType.QC_ESIGN: "esign", QcCertType.QC_ESEAL: "eseal", QcCertType.QC_WEB: "web"}


def chain_of(cert: x509.Certificate, pool: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    """*cert* and its issuers found in *pool* by name (and key identifier when both say
    one), leaf first. Validation proper is the engines' job: this only finds the CAs."""
    candidates = list(pool)
    chain = [cert]
    # asn1crypto's self_signed is "no", "maybe" (issuer = subject) or "yes".
    while len(chain) < 10 and chain[-1].self_signed == "no":
        current = chain[-1]
        issuer = next(
            (
                c
                for c in candidates
                if c.subject == current.issuer
                and (
                    current.authority_key_identifier is None
                    or c.key_identifier is None
                    or current.authority_key_identifier == c.key_identifier
                )
                and all(c.sha256 != seen.sha256 for seen in chain)
            ),
            None,
        )
        if issuer is None:
            break
        chain.append(issuer)
    return chain


def _path(chain: Sequence[x509.Certificate]) -> ValidationPath:
    """*chain* is leaf first, its last certificate taken as the path's anchor."""
    leaf, *rest = chain
    if not rest:
        return ValidationPath(CertTrustAnchor(leaf), [], None)
    return ValidationPath(CertTrustAnchor(rest[-1]), list(reversed(rest[:-1])), leaf)


def qualify_signer(
    lists: TrustedLists | None, chain: Sequence[x509.Certificate], at: datetime
) -> SignerQualification:
    """The qualification of ``chain[0]`` (the signer), its chain leaf first, at *at*."""
    if lists is None or not lists.usable or not chain:
        return SignerQualification(NOT_APPLICABLE, at)
    if len(chain) == 1:
        # A self-signed signer certificate: no CA on the lists issued it.
        return SignerQualification("AdESig", at)
    result = QualificationAssessor(lists.ca).check_entity_cert_qualified(_path(chain), at)
    status = result.status
    service = result.service_definition
    if service is None or not status.qualified:
        return SignerQualification(
            "AdESig", at, service=service.base_info.service_name if service else None
        )
    kind = _TYPES.get(status.qc_type)
    qscd = status.qc_key_security.is_qscd
    if kind == "esign":
        label = "QESig" if qscd else "AdESig-QC"
    elif kind == "eseal":
        label = "QESeal" if qscd else "AdESeal-QC"
    else:
        label = "AdESig"
    return SignerQualification(
        label,
        at,
        qualified_certificate=True,
        qscd=qscd,
        certificate_type=kind,
        service=service.base_info.service_name,
    )


def qualify_timestamp(
    lists: TrustedLists | None, tsa_chain: Sequence[x509.Certificate], gen_time: datetime
) -> TimestampQualification:
    """Whether the TSA whose chain (TSA certificate first) is *tsa_chain* was a granted
    TSA/QTST at *gen_time*."""
    if lists is None or not lists.usable:
        return TimestampQualification(None, gen_time)
    for cert in tsa_chain:
        for sd in lists.tsa.applicable_service_definitions(AuthorityWithCert(cert), gen_time):
            return TimestampQualification(True, gen_time, sd.base_info.service_name)
    return TimestampQualification(False, gen_time)
