"""Each verified signature's qualification, from the EU trusted lists.

The engines leave an :class:`~sidecar.signing.report.Evidence` on each report; this
module builds the signer's and each TSA's chain from the certificates the document
carries and the anchors, and asks :mod:`sidecar.trust.lists.qualify`. As the EU DSS
qualification report does, the signer is judged at signing time (the earliest
signature timestamp's genTime, the best proof of existence; else the claimed signing
time) and at validation time (now). A signature that failed outright has no
qualification (``n/a``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from asn1crypto import x509

from ..trust.lists import TrustedLists, chain_of, qualify_signer, qualify_timestamp
from .report import Indication, SignatureReport

__all__ = ["qualify_reports"]


def _lists_state(lists: TrustedLists | None) -> str:
    if lists is None:
        return "not configured"
    if not lists.usable:
        return "unusable"
    return "stale" if any(i.state == "stale" for i in lists.lists) else "current"


def qualify_reports(
    reports: Sequence[SignatureReport],
    lists: TrustedLists | None,
    anchors: Sequence[x509.Certificate] = (),
    *,
    now: datetime | None = None,
) -> None:
    """Set ``qualification`` on each report that carries evidence."""
    now = now or datetime.now(UTC)
    for report in reports:
        evidence = report.evidence
        if evidence is None:
            continue
        pool = [*evidence.certificates, *anchors]
        chain = chain_of(evidence.signer, pool)
        signing_time = report.timestamp_time or report.claimed_signing_time or now
        failed = report.indication == Indication.TOTAL_FAILED
        usable = None if failed else lists
        at_signing = qualify_signer(usable, chain, signing_time)
        at_validation = qualify_signer(usable, chain, now)
        stamps = [
            qualify_timestamp(usable, chain_of(tsa, pool) if tsa is not None else [], gen_time)
            for gen_time, tsa in evidence.timestamps
        ]
        entry: dict[str, Any] = {
            "signature": at_signing.qualification,
            "qscd": at_signing.qscd,
            "at_signing_time": at_signing.as_json(),
            "at_validation_time": at_validation.as_json(),
            "timestamps": [s.as_json() for s in stamps],
            "qualified_timestamp": bool(stamps) and all(s.qualified for s in stamps),
            "trusted_lists": _lists_state(lists),
        }
        report.qualification = entry
        if usable is not None and stamps and not entry["qualified_timestamp"]:
            report.messages.append(
                "a signature timestamp's TSA was not a granted QTST on the trusted lists at "
                "its genTime: the timestamp is not qualified"
            )
