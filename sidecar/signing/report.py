"""Validation reports in the terms of ETSI EN 319 102-1.

Both engines (XAdES, PAdES) report each signature they validate as a
:class:`SignatureReport`; ``POST /v1/verify`` serialises a list of them. The
indications and sub-indications are the standard's (clause 5.1.3), so that what
a vendor sees matches what the CNS's validator says.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from asn1crypto import x509
from cryptography import x509 as cx509

__all__ = [
    "BASELINE_LEVELS",
    "Evidence",
    "Indication",
    "Level",
    "SignatureReport",
    "SubIndication",
    "subject_text",
]


class Indication(StrEnum):
    TOTAL_PASSED = "TOTAL_PASSED"
    TOTAL_FAILED = "TOTAL_FAILED"
    INDETERMINATE = "INDETERMINATE"


class SubIndication(StrEnum):
    """EN 319 102-1 table 5 sub-indications (the ones an engine can reach here)."""

    # with TOTAL_FAILED
    FORMAT_FAILURE = "FORMAT_FAILURE"
    HASH_FAILURE = "HASH_FAILURE"
    SIG_CRYPTO_FAILURE = "SIG_CRYPTO_FAILURE"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "NOT_YET_VALID"
    # with INDETERMINATE
    SIG_CONSTRAINTS_FAILURE = "SIG_CONSTRAINTS_FAILURE"
    CHAIN_CONSTRAINTS_FAILURE = "CHAIN_CONSTRAINTS_FAILURE"
    CERTIFICATE_CHAIN_GENERAL_FAILURE = "CERTIFICATE_CHAIN_GENERAL_FAILURE"
    CRYPTO_CONSTRAINTS_FAILURE = "CRYPTO_CONSTRAINTS_FAILURE"
    CRYPTO_CONSTRAINTS_FAILURE_NO_POE = "CRYPTO_CONSTRAINTS_FAILURE_NO_POE"
    OUT_OF_BOUNDS_NO_POE = "OUT_OF_BOUNDS_NO_POE"
    OUT_OF_BOUNDS_NOT_REVOKED = "OUT_OF_BOUNDS_NOT_REVOKED"
    REVOKED_NO_POE = "REVOKED_NO_POE"
    NO_SIGNING_CERTIFICATE_FOUND = "NO_SIGNING_CERTIFICATE_FOUND"
    NO_CERTIFICATE_CHAIN_FOUND = "NO_CERTIFICATE_CHAIN_FOUND"
    TRY_LATER = "TRY_LATER"
    SIGNED_DATA_NOT_FOUND = "SIGNED_DATA_NOT_FOUND"
    TIMESTAMP_ORDER_FAILURE = "TIMESTAMP_ORDER_FAILURE"


class Level(StrEnum):
    """Baseline levels (EN 319 132-1 / EN 319 142-1), or none reached."""

    NONE = "none"
    B_B = "B-B"
    B_T = "B-T"
    B_LT = "B-LT"
    B_LTA = "B-LTA"

    def at_least(self, other: Level) -> bool:
        """Whether this level reaches ``other`` (each baseline level adds to the one before)."""
        return _RANK[self] >= _RANK[other]


#: The baseline levels, lowest first: the same four for XAdES and PAdES.
BASELINE_LEVELS: tuple[Level, ...] = (Level.B_B, Level.B_T, Level.B_LT, Level.B_LTA)
_RANK = {Level.NONE: -1, **{level: rank for rank, level in enumerate(BASELINE_LEVELS)}}


@dataclass(frozen=True)
class Evidence:
    """What judging a signature's qualification needs (never serialised): the signer's
    certificate, the certificates the document carries, each signature timestamp's
    genTime and TSA certificate."""

    signer: x509.Certificate
    certificates: tuple[x509.Certificate, ...] = ()
    timestamps: tuple[tuple[datetime, x509.Certificate | None], ...] = ()


@dataclass
class SignatureReport:
    """The outcome for one signature in a document."""

    #: ``"XAdES"`` or ``"PAdES"`` (or ``"CAdES"`` for a PDF's CMS without ETSI subfilter).
    format: str
    #: The highest baseline level whose requirements the signature fully meets.
    level: Level
    indication: Indication
    sub_indication: SubIndication | None = None
    #: Where the signature is: an XML Id or XPath, a PDF field name.
    signature_id: str | None = None
    signer: str | None = None
    signer_certificate_serial: str | None = None
    claimed_signing_time: datetime | None = None
    #: genTime of the signature timestamp, if any.
    timestamp_time: datetime | None = None
    #: Whether the document's own certificates and revocation data suffice to validate
    #: the signer and the TSA without any network access.
    offline_validation_data: bool = False
    #: For a PDF: whether the signature covers the whole document (bar later DSS/DocTimeStamp
    #: revisions).
    coverage: str | None = None
    #: Human-readable findings, one line each, worst first.
    messages: list[str] = field(default_factory=list)
    #: Engine-specific details (e.g. checks performed), kept JSON-serialisable.
    details: dict[str, Any] = field(default_factory=dict)
    #: From the EU trusted lists (sidecar.signing.qualification): the signer
    #: certificate's qualification (QESig, QESeal, AdESig-QC, AdESig, n/a), the QSCD
    #: indication, and whether each timestamp's TSA was a granted QTST at genTime.
    qualification: dict[str, Any] | None = None
    #: Set by the engines for the qualification; not part of the JSON.
    evidence: Evidence | None = field(default=None, repr=False, compare=False)

    def as_json(self) -> dict[str, Any]:
        entry = asdict(replace(self, evidence=None))
        entry.pop("evidence")
        for key in ("claimed_signing_time", "timestamp_time"):
            value = getattr(self, key)
            entry[key] = value.isoformat() if value else None
        entry["level"] = self.level.value
        entry["indication"] = self.indication.value
        entry["sub_indication"] = self.sub_indication.value if self.sub_indication else None
        return entry


def subject_text(cert: x509.Certificate) -> str:
    """A signer's name for a report. asn1crypto's rendering fails on some strings that
    other software writes (a certificate in a caller's document is anyone's): then
    RFC 4514 by cryptography, then a plain placeholder; never an exception."""
    try:
        return str(cert.subject.human_friendly)
    except (ValueError, TypeError, KeyError, UnicodeError):
        try:
            return cx509.load_der_x509_certificate(cert.dump()).subject.rfc4514_string()
        except ValueError:
            return "(a subject name that cannot be read)"
