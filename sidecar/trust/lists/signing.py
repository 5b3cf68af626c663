"""At signing: will the signature pass as qualified? The signer's chain and the TSAs,
judged against the trusted lists.

The signer's certificate must chain to a CA/QC service granted now (a qualified
certificate: QESig, QESeal, AdESig-QC, AdESeal-QC); each TSA whose chain is known (from
its last timestamp) must be a TSA/QTST granted now. What happens otherwise is
``[trust.lists] at_signing``: ``warn`` (sign, say so in the answer's
``X-Signature-Qualification`` and the log) or ``refuse``. Without usable lists nothing
is judged (``n/a``): the doctor and the status page say why.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from asn1crypto import x509

from .qualify import SignerQualification, TimestampQualification, qualify_signer, qualify_timestamp
from .source import TrustedLists

__all__ = ["QUALIFIED_CERTIFICATES", "SigningVerdict", "judge_signing"]

#: Signer qualifications that come from a qualified certificate.
QUALIFIED_CERTIFICATES = frozenset({"QESig", "QESeal", "AdESig-QC", "AdESeal-QC"})


@dataclass(frozen=True)
class SigningVerdict:
    signer: SignerQualification
    #: Per configured TSA URL: its qualification now, or None while its chain is unknown.
    timestamps: tuple[tuple[str, TimestampQualification | None], ...]
    policy: Literal["warn", "refuse"] = "warn"

    @property
    def judged(self) -> bool:
        return self.signer.qualification != "n/a"

    @property
    def problems(self) -> list[str]:
        if not self.judged:
            return []
        found: list[str] = []
        if self.signer.qualification not in QUALIFIED_CERTIFICATES:
            found.append(
                "the signer's certificate does not chain to a CA/QC service granted on the "
                "trusted lists: the signature will not pass as qualified"
            )
        for url, stamp in self.timestamps:
            if stamp is not None and stamp.qualified is False:
                found.append(f"the TSA {url} is not a granted QTST on the trusted lists")
        return found

    @property
    def refused(self) -> bool:
        return self.policy == "refuse" and bool(self.problems)

    def header(self) -> str:
        """``X-Signature-Qualification``: e.g. ``QESig; timestamp=qualified``."""
        if not self.judged:
            return "n/a; trusted lists not in use"
        known = [s for _, s in self.timestamps if s is not None]
        if not known:
            stamp = "unknown"
        elif all(s.qualified for s in known):
            stamp = "qualified"
        else:
            stamp = "not-qualified"
        return f"{self.signer.qualification}; timestamp={stamp}"


#: How long a verdict "now" is reused for the same lists, chains and policy. The signing
#: routes judge twice per signature, on the event loop (~1 ms each: the qualification
#: of the signer's chain and the TSAs'); what a verdict depends on but the clock changes
#: only when the lists are refreshed (a new object) or a chain changes (the key), and a
#: service's status or a certificate's validity that changes within this window shows
#: in the next verdict.
VERDICT_TTL = 5.0

#: key → (expiry on the monotonic clock, the lists judged with, the verdict).
_verdicts: dict[tuple[object, ...], tuple[float, TrustedLists | None, SigningVerdict]] = {}


def judge_signing(
    lists: TrustedLists | None,
    signer_chain: Sequence[x509.Certificate],
    tsa_chains: Mapping[str, Sequence[x509.Certificate] | None],
    policy: Literal["warn", "refuse"] = "warn",
    now: datetime | None = None,
) -> SigningVerdict:
    """The verdict for signing now with *signer_chain* (leaf first) and the TSAs.

    Without *now*, a verdict given for the same lists (the same object), the same
    certificates (by DER: a new token brings equal ones in new objects) and policy in
    the last :data:`VERDICT_TTL` seconds is given again."""
    if now is not None:
        return _judge(lists, signer_chain, tsa_chains, policy, now)
    key = (
        id(lists),
        policy,
        tuple(cert.dump() for cert in signer_chain),
        tuple(
            (url, tuple(cert.dump() for cert in chain) if chain else None)
            for url, chain in tsa_chains.items()
        ),
    )
    moment = time.monotonic()
    cached = _verdicts.get(key)
    # The lists compared as objects too: a new object may reuse a freed one's id.
    if cached is not None and cached[0] > moment and cached[1] is lists:
        return cached[2]
    verdict = _judge(lists, signer_chain, tsa_chains, policy, datetime.now(UTC))
    if len(_verdicts) >= 64:  # keys of lists since refreshed, of chains since changed
        _verdicts.clear()
    _verdicts[key] = (moment + VERDICT_TTL, lists, verdict)
    return verdict


def _judge(
    lists: TrustedLists | None,
    signer_chain: Sequence[x509.Certificate],
    tsa_chains: Mapping[str, Sequence[x509.Certificate] | None],
    policy: Literal["warn", "refuse"],
    now: datetime,
) -> SigningVerdict:
    signer = qualify_signer(lists, signer_chain, now)
    stamps = tuple(
        (url, qualify_timestamp(lists, chain, now) if chain else None)
        for url, chain in tsa_chains.items()
    )
    return SigningVerdict(signer, stamps, policy)
