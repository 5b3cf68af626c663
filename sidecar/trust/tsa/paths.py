"""Validated TSA certificate paths, kept so that a token costs its own checks only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import x509

from ..anchors import TrustAnchors


@dataclass
class TsaPathStats:
    #: Full checks (CMS signature and path validation by pyHanko).
    validations: int = 0
    #: Tokens whose TSA certificate path was taken from the cache.
    reused: int = 0


@dataclass(frozen=True)
class _TsaPath:
    chain: tuple[x509.Certificate, ...]
    anchors: TrustAnchors
    #: Every certificate of the path is valid from ``valid_from`` to ``valid_to``.
    valid_from: datetime
    valid_to: datetime
    #: Monotonic clock reading after which the entry is validated again.
    expires: float


class TsaPathCache:
    """Validated TSA certificate paths, so that a token costs its own checks only.

    What is kept, per TSA certificate (its DER) and anchor set: the path pyHanko
    validated for a token from that certificate to one of the anchors (PKIX path
    validation: each certificate's signature, names, basic constraints, the TSA
    certificate's key usage and ``timeStamping`` EKU) and the interval in which
    every certificate of the path is valid. Nothing in it depends on the token
    but the time, so a later token is accepted with that path when its genTime
    falls inside the interval; otherwise it is validated in full again.

    Replies arriving together share the first one's path validation (single
    flight per TSA certificate) rather than each validating the same path.

    How long: ``ttl`` seconds (one hour by default), or until the anchors change
    (another :class:`TrustAnchors` object). Revocation is not part of it: the
    reply check never looks at the TSA's revocation status (no fetching on the hot
    path); B-LT collects and checks the TSA chain's revocation data with
    :meth:`~sidecar.trust.revocation.RevocationService.revocation_info`, cached
    by the revocation data's own validity.
    """

    def __init__(
        self,
        *,
        ttl: float = 3600.0,
        max_entries: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._paths: dict[bytes, _TsaPath] = {}
        self._pending: dict[bytes, asyncio.Future[None]] = {}
        self.stats = TsaPathStats()

    def __len__(self) -> int:
        return len(self._paths)

    def clear(self) -> None:
        self._paths.clear()

    def lookup(
        self, cert: x509.Certificate, anchors: TrustAnchors, at: datetime
    ) -> tuple[x509.Certificate, ...] | None:
        """The kept chain (*cert* first) usable for a token of genTime *at*, if any."""
        entry = self._paths.get(cert.sha256)
        if entry is None:
            return None
        if entry.anchors is not anchors or self._clock() >= entry.expires:
            del self._paths[cert.sha256]
            return None
        if not entry.valid_from <= at <= entry.valid_to:
            return None
        return entry.chain

    def validating(self, cert: x509.Certificate) -> bool:
        """Whether a full check of a token from *cert* is under way."""
        return cert.sha256 in self._pending

    async def settled(self, cert: x509.Certificate) -> None:
        """Wait for the full check under way for *cert* (whatever its outcome)."""
        pending = self._pending.get(cert.sha256)
        if pending is not None:
            await asyncio.shield(pending)

    def start(self, cert: x509.Certificate) -> Callable[[], None]:
        """Mark a full check for *cert* as under way; call the result when it ends."""
        key = cert.sha256
        pending: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, pending)

        def settle() -> None:
            if self._pending.get(key) is pending:
                del self._pending[key]
            if not pending.done():
                pending.set_result(None)

        return settle

    def remember(self, chain: Sequence[x509.Certificate], anchors: TrustAnchors) -> None:
        """Keep *chain* (TSA certificate first, anchor last), just validated against *anchors*."""
        if not chain:
            return
        if len(self._paths) >= self._max_entries:
            self._paths.pop(next(iter(self._paths)))
        self._paths[chain[0].sha256] = _TsaPath(
            chain=tuple(chain),
            anchors=anchors,
            valid_from=max(c.not_valid_before for c in chain),
            valid_to=min(c.not_valid_after for c in chain),
            expires=self._clock() + self._ttl,
        )
