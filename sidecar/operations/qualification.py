"""``[trust.lists] at_signing``: what a signature will pass as, judged when signing.

Before signing, the signer's chain and each TSA already seen are judged against the
trusted lists (:mod:`sidecar.trust.lists.signing`); after signing again, now that the
TSA just used is known. ``refuse``: :class:`NotQualified` instead of the document;
``warn``: the document, a warning in the log, and the verdict for the caller to show
(the API's ``X-Signature-Qualification``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from asn1crypto import x509

from ..bounded import remember
from ..errors import Refused
from ..health import CheckResult
from ..keys import KeyLayerError, KeyRegistry, Signer
from ..trust import TrustAnchors, TrustServices
from ..trust.lists import chain_of
from ..trust.lists.signing import SigningVerdict, judge_signing

__all__ = [
    "NotQualified",
    "after_signing",
    "before_signing",
    "signing_verdict",
    "trusted_lists_check",
]

log = logging.getLogger("sidecar.trust.lists")


class NotQualified(Refused):
    """``[trust.lists] at_signing = 'refuse'`` and the signature would not be qualified."""

    def __init__(self, verdict: SigningVerdict) -> None:
        self.verdict = verdict
        super().__init__("; ".join(verdict.problems))


class _SignerChains:
    """Each signer's chain to the anchors, found once per certificates and anchor set.

    Finding it compares names (RFC 5280 equality, string preparation included) across
    every anchor, and a signature asks twice (before and after signing): the answer
    depends only on the signer's certificates (by DER) and the anchors (by object:
    the trusted lists replace it when they change), so it is kept for those.
    """

    def __init__(self, max_entries: int = 32) -> None:
        self._known: dict[tuple[bytes, ...], tuple[TrustAnchors, list[x509.Certificate]]] = {}
        self._max_entries = max_entries

    def of(self, signer: Signer, anchors: TrustAnchors) -> list[x509.Certificate]:
        key = (signer.certificate.dump(), *(c.dump() for c in signer.chain))
        found = self._known.get(key)
        if found is not None and found[0] is anchors:
            return found[1]
        chain = chain_of(signer.certificate, [*signer.chain, *anchors.certificates])
        remember(self._known, key, (anchors, chain), self._max_entries)
        return chain


_CHAINS = _SignerChains()


def signing_verdict(trust: TrustServices, signer: Signer) -> SigningVerdict | None:
    """The verdict for *signer* and the configured TSAs; None without trusted lists."""
    if trust.lists is None:
        return None
    chain = _CHAINS.of(signer, trust.anchors)
    tsa_chains = {e.url: trust.tsa.last_chains.get(e.url) for e in trust.tsa.endpoints}
    return judge_signing(trust.lists.current, chain, tsa_chains, trust.lists.settings.at_signing)


def before_signing(trust: TrustServices, signer: Signer) -> None:
    """Raise :class:`NotQualified` when ``refuse`` and what is known already fails."""
    verdict = signing_verdict(trust, signer)
    if verdict is not None and verdict.refused:
        raise NotQualified(verdict)


def after_signing(trust: TrustServices, signer: Signer) -> SigningVerdict | None:
    """The verdict to show; :class:`NotQualified` when ``refuse`` and the TSA just used
    (or the signer) fails."""
    verdict = signing_verdict(trust, signer)
    if verdict is None:
        return None
    if verdict.refused:
        raise NotQualified(verdict)
    for problem in verdict.problems:
        log.warning("signing with key %s: %s", signer.id, problem)
    return verdict


def trusted_lists_check(
    trust: TrustServices, keys: KeyRegistry
) -> Callable[[], Awaitable[CheckResult]]:
    """Health check (and status page card): the lists' state and age, and what a
    signature with the default key and the configured TSAs would pass as now."""

    async def check() -> CheckResult:
        assert trust.lists is not None
        data = trust.lists.as_json()
        current = trust.lists.current
        if not current.usable and trust.lists.last_refresh is None and not current.lists:
            # Nothing cached yet and the first fetch (at start) is under way.
            return CheckResult("trusted-lists", "ok", "fetching the trusted lists", data)
        if not current.usable:
            detail = "; ".join(current.problems) or "no trusted list in use"
            return CheckResult("trusted-lists", "degraded", detail, data)
        try:
            signer = keys.get(None)
            verdict = signing_verdict(trust, signer)
        except KeyLayerError:
            verdict = None  # no default key, or its certificate not read yet
        if verdict is not None:
            data["signing"] = {"qualification": verdict.header(), "problems": verdict.problems}
        lists = ", ".join(f"{i['list']} {i['state']}" for i in data["lists"])
        problems = [*current.problems, *(verdict.problems if verdict else [])]
        if problems:
            return CheckResult("trusted-lists", "degraded", "; ".join(problems), data)
        said = f"; signatures now: {verdict.header()}" if verdict else ""
        return CheckResult("trusted-lists", "ok", f"{lists}{said}", data)

    return check
