"""The signing routes' side of ``[trust.lists] at_signing``.

Before signing, the signer's chain and each TSA already seen are judged against the
trusted lists (:mod:`sidecar.trust.lists.signing`); after signing again, now that the
TSA just used is known. ``refuse``: a ``422 not_qualified`` instead of the document;
``warn``: the document, a warning in the log, and ``X-Signature-Qualification`` saying
what the signature will pass as (also when all is well).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..health import CheckResult
from ..keys import KeyLayerError, Signer
from ..trust.lists import chain_of
from ..trust.lists.signing import SigningVerdict, judge_signing
from .problems import Problem
from .timestamps import TRUST

__all__ = [
    "HEADER",
    "after_signing",
    "before_signing",
    "signing_verdict",
    "trusted_lists_check",
]

log = logging.getLogger("sidecar.trust.lists")

HEADER = "X-Signature-Qualification"


def signing_verdict(app: web.Application, signer: Signer) -> SigningVerdict | None:
    """The verdict for *signer* and the configured TSAs; None without trusted lists."""
    trust = app.get(TRUST)
    if trust is None or trust.lists is None:
        return None
    chain = chain_of(signer.certificate, [*signer.chain, *trust.anchors.certificates])
    tsa_chains = {e.url: trust.tsa.last_chains.get(e.url) for e in trust.tsa.endpoints}
    return judge_signing(trust.lists.current, chain, tsa_chains, trust.lists.settings.at_signing)


def _refuse(verdict: SigningVerdict) -> Problem:
    return Problem(
        422,
        "not_qualified",
        "; ".join(verdict.problems) + " ([trust.lists] at_signing = 'refuse')",
        headers={HEADER: verdict.header()},
    )


def before_signing(app: web.Application, signer: Signer) -> None:
    """Raise ``422 not_qualified`` when ``refuse`` and what is known already fails."""
    verdict = signing_verdict(app, signer)
    if verdict is not None and verdict.refused:
        raise _refuse(verdict)


def after_signing(app: web.Application, signer: Signer) -> dict[str, str]:
    """The answer's headers; ``422 not_qualified`` when ``refuse`` and the TSA just
    used (or the signer) fails."""
    verdict = signing_verdict(app, signer)
    if verdict is None:
        return {}
    if verdict.refused:
        raise _refuse(verdict)
    for problem in verdict.problems:
        log.warning("signing with key %s: %s", signer.id, problem)
    return {HEADER: verdict.header()}


def trusted_lists_check(app: web.Application) -> Callable[[], Awaitable[CheckResult]]:
    """Health check (and status page card): the lists' state and age, and what a
    signature with the default key and the configured TSAs would pass as now."""
    from .signing_keys import KEY_REGISTRY

    async def check() -> CheckResult:
        trust = app[TRUST]
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
            signer = app[KEY_REGISTRY].get(None)
            verdict = signing_verdict(app, signer)
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
