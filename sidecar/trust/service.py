"""The trust layer as one object: anchors, the TSA client, revocation data, the EU lists.

:func:`open_trust` builds it from ``[trust]`` and tears it down (closes the
revocation cache). It knows nothing of the HTTP API: the API layer's cleanup
context hands it the shared session, the data directory and, in sandbox mode, the
sandbox roots and TSA URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from ..config import TrustSettings, TsaSettings
from .anchors import TrustAnchors, bundled_anchor_dir
from .lists.qualify import chain_of
from .lists.service import ListService
from .lists.source import ListPolicy, TrustedLists
from .revocation import RevocationCache, RevocationService
from .tsa import TimeStampClient, TsaEndpoint

__all__ = [
    "REVOCATION_CACHE_FILE",
    "TrustServices",
    "load_anchors",
    "open_trust",
    "with_list_anchors",
]

log = logging.getLogger("sidecar.trust")

REVOCATION_CACHE_FILE = "revocation.sqlite3"


@dataclass
class TrustServices:
    anchors: TrustAnchors
    tsa: TimeStampClient
    revocation: RevocationService
    #: The EU trusted lists, when ``[trust.lists] enabled`` (or the sandbox's).
    lists: ListService | None = None

    def use_anchors(self, anchors: TrustAnchors) -> None:
        """Replace the anchors everywhere (the trusted lists changed)."""
        self.anchors = anchors
        self.tsa.anchors = anchors
        self.revocation.anchors = anchors


def with_list_anchors(
    anchors: TrustAnchors, lists: TrustedLists, at: datetime | None = None
) -> TrustAnchors:
    """*anchors* plus the certificates of the CA/QC and TSA/QTST services granted *at*
    that do not already chain to one of *anchors*.

    A listed CA is usually an issuing CA, not a root: made an anchor beside its own
    root, it would cut the chains short, and B-LT signatures would no longer carry the
    revocation data of that CA for a verifier that trusts only the root.
    """
    at = at or datetime.now(UTC)
    listed = [*lists.ca_certificates(at), *lists.tsa_certificates(at)]
    pool = [*anchors.certificates, *listed]
    added = [
        cert for cert in listed if cert not in anchors and chain_of(cert, pool)[-1] not in anchors
    ]
    return TrustAnchors.of([*anchors.certificates, *added])


def load_anchors(settings: TrustSettings, extra_files: Sequence[Path] = ()) -> TrustAnchors:
    directories: list[Path] = []
    if settings.bundled_anchors and (bundled := bundled_anchor_dir()) is not None:
        directories.append(bundled)
    if settings.anchors_dir is not None:
        directories.append(settings.anchors_dir)
    return TrustAnchors.load([*settings.anchors, *extra_files], directories)


@asynccontextmanager
async def open_trust(
    settings: TrustSettings,
    *,
    session: aiohttp.ClientSession,
    data_dir: Path,
    extra_anchor_files: Sequence[Path] = (),
    default_tsa_url: str | None = None,
    on_exchange: Callable[[str, str, float], None] | None = None,
    list_policy: ListPolicy | None = None,
) -> AsyncIterator[TrustServices]:
    """Anchors, TSA client and revocation service, ready; the cache closed on exit.

    *default_tsa_url* (the sandbox TSA) is used when ``[[trust.tsa]]`` names none;
    *on_exchange(upstream, outcome, seconds)* hears of every TSA/OCSP/CRL exchange.
    With ``[trust.lists] enabled`` (or a *list_policy*, the sandbox's lists), the cached
    trusted lists are loaded (no network), their granted CA/QC and TSA/QTST services
    join the anchors, and a background task refreshes them every ``refresh_interval``.
    Raises ValueError / :class:`~sidecar.trust.anchors.AnchorError` for an unusable
    configuration, before anything is started.
    """
    anchors = load_anchors(settings, extra_anchor_files)
    tsa_settings = settings.tsa
    if not tsa_settings and default_tsa_url:
        tsa_settings = (replace(TsaSettings(), url=default_tsa_url),)
    endpoints = [TsaEndpoint.from_settings(s) for s in tsa_settings]
    if not anchors:
        log.warning("no trust anchor configured: every timestamp will be refused")
    if not endpoints:
        log.warning("no TSA configured ([[trust.tsa]]): B-T and higher levels are unavailable")
    rev = settings.revocation
    cache = RevocationCache(
        rev.cache_file or data_dir / REVOCATION_CACHE_FILE,
        default_validity=rev.default_validity,
        max_validity=rev.max_validity,
        refresh_margin=rev.refresh_margin,
    )
    await cache.open()
    refresher: asyncio.Task[None] | None = None
    try:
        # Issuers fetched before (a TSA's CA) are kept on disk: a restart must not
        # depend on the host that serves them.
        tsa = TimeStampClient(
            session,
            endpoints,
            anchors,
            clock_skew=settings.clock_skew,
            breaker=settings.breaker,
            on_exchange=on_exchange,
            known_certs=cache.certificates(),
            keep_issuer=cache.keep_certificate,
        )
        log.info(
            "trust: %d anchor(s), TSA(s) %s",
            len(anchors),
            ", ".join(e.url for e in endpoints) or "none",
        )
        revocation = RevocationService(
            session, anchors, cache, timeout=rev.timeout, on_exchange=on_exchange
        )
        services = TrustServices(anchors, tsa, revocation)
        if settings.lists.enabled or list_policy is not None:
            lists = ListService(settings.lists, data_dir, policy=list_policy)
            configured = anchors
            lists.on_change = lambda current: services.use_anchors(
                with_list_anchors(configured, current)
            )
            await lists.load()
            services.lists = lists
            log.info(
                "trusted lists: %s, %d anchor(s) in all",
                ", ".join(f"{i.key} {i.state}" for i in lists.current.lists) or "none cached",
                len(services.anchors),
            )
            refresher = asyncio.create_task(lists.run(session), name="trusted-lists-refresh")
        yield services
    finally:
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        await cache.close()
