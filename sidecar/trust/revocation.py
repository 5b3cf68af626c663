"""Revocation data for B-LT: OCSP first, CRL as fallback, cached by their own validity.

pyhanko-certvalidator does the fetching (its aiohttp fetchers, on the daemon's shared
session) and the validation (OCSP first; CRLs when OCSP gives no good status). What
this module adds is a cache shared by every validation context of the process:

- OCSP responses keyed by certificate (SHA-256 of its DER), CRLs keyed by the
  distribution points they are fetched from (all certificates of one CA share them);
- an entry is served until its ``nextUpdate`` (less a refresh margin), capped by
  ``max_validity``; a response without ``nextUpdate`` lives ``default_validity``;
- concurrent lookups of one key share one request (single flight), so a burst of a
  thousand signatures by one physician costs one OCSP request per certificate;
- kept in memory and on disk (SQLite, WAL), so that after a restart, or while a
  responder blips, an entry still inside its validity is used — B-LT can still be
  produced until the data's own ``nextUpdate``.

The same database keeps the issuer certificates fetched from caIssuers URLs (e.g. a
TSA's issuing CA, :meth:`RevocationCache.keep_certificate`), so that after a restart
a chain can be built without the host that serves them. They are path candidates
only, never trust anchors; expired ones are not loaded.

Above that cache, :meth:`RevocationService.revocation_info` keeps the *validated*
result of each chain (path to an anchor, revocation status of every certificate, the
data to embed), so that a burst of signatures validates each chain once:

- keyed by the chain as given (the SHA-256 of each certificate, in order) and the
  anchor set; the OCSP/CRL cache entries the validation read are recorded with the
  exact DER values it saw (the *revocation data identity*);
- reused only while every one of those cache entries still holds the very same
  values and none has reached its refresh point (``nextUpdate`` less the refresh
  margin), and while every certificate of the path (OCSP responders included) is
  inside its validity period; capped at ``max_validity`` like the data itself;
- a result built on data served stale (refresh failed, data still inside its own
  ``nextUpdate``) is not kept: the next call validates again;
- failures (revoked, no path, no data) are never kept;
- concurrent calls for one chain share one validation (single flight).

So a reused result is exactly what a new validation would find from the same cached
data: the embedded OCSP responses and CRLs are always inside their
thisUpdate/nextUpdate window (EN 319 102-1 freshness), and a certificate revoked
after a validation is caught as soon as its status is refreshed (at the latest at
the refresh point of the data that said it was good).

Engines call :meth:`RevocationService.revocation_info` for a chain (the signer's or
the TSA's) or take :meth:`RevocationService.validation_context` for pyHanko.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import aiohttp
from asn1crypto import cms, crl, ocsp, x509
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.authority import Authority
from pyhanko_certvalidator.errors import (
    CRLFetchError,
    InsufficientRevinfoError,
    OCSPFetchError,
    PathBuildingError,
    RevokedError,
    ValidationError,
)
from pyhanko_certvalidator.fetchers import Fetchers
from pyhanko_certvalidator.fetchers.aiohttp_fetchers import (
    AIOHttpCertificateFetcher,
    AIOHttpCRLFetcher,
    AIOHttpOCSPFetcher,
)
from pyhanko_certvalidator.fetchers.api import CRLFetcher, FetchLimits, OCSPFetcher
from pyhanko_certvalidator.fetchers.common_utils import (
    FetchBudget,
    enumerate_delivery_point_urls,
)
from pyhanko_certvalidator.path import ValidationPath
from pyhanko_certvalidator.policy_decl import (
    CertRevTrustPolicy,
    RevocationCheckingPolicy,
    RevocationCheckingRule,
)
from pyhanko_certvalidator.util import get_relevant_crl_dps, issuer_serial

from ..errors import Refused, SidecarError, UpstreamUnavailable
from ..migrations import Migration, MigrationError, migrate
from ..storage import open_private, storage_error
from .anchors import TrustAnchors

__all__ = [
    "REQUIRE_REVINFO",
    "CacheStats",
    "CertificateRevoked",
    "ChainNotValid",
    "RevocationCache",
    "RevocationError",
    "RevocationService",
    "RevocationUnavailable",
    "RevocationValues",
    "ValidationStats",
]

log = logging.getLogger("sidecar.trust.revocation")

Kind = Literal["ocsp", "crl"]
#: Validated chains kept at most (signers and TSAs of one installation: a handful).
_MAX_VALIDATED = 256
#: Fetched issuer certificates kept on disk at most (a handful per installation).
_MAX_CERTIFICATES = 64

#: Every certificate of the chain below the anchor needs OCSP or CRL data (B-LT).
REQUIRE_REVINFO = CertRevTrustPolicy(
    RevocationCheckingPolicy(
        ee_certificate_rule=RevocationCheckingRule.CRL_OR_OCSP_REQUIRED,
        intermediate_ca_cert_rule=RevocationCheckingRule.CRL_OR_OCSP_REQUIRED,
    )
)


class RevocationError(SidecarError):
    """The chain cannot be given revocation data: gathers the causes below (a policy
    refusal, an unreachable responder), each with its family; never raised as such."""


class ChainNotValid(RevocationError, Refused):
    """The chain does not validate (untrusted, expired...): nothing may be signed."""


class CertificateRevoked(RevocationError, Refused):
    """A certificate of the chain is revoked: nothing may be signed with it."""


class RevocationUnavailable(RevocationError, UpstreamUnavailable):
    """No responder or CRL could be reached, and nothing usable is cached."""


@dataclass(frozen=True)
class RevocationValues:
    """What a B-LT signature embeds for one chain (DER throughout)."""

    ocsp_responses: tuple[bytes, ...]
    crls: tuple[bytes, ...]
    #: The chain up to its anchor, and the certificates of the OCSP responders.
    certificates: tuple[bytes, ...]
    path: ValidationPath = field(repr=False, compare=False)


@dataclass
class CacheStats:
    hits: int = 0
    #: Requests sent upstream (one per single-flight refresh).
    fetches: int = 0
    fetch_failures: int = 0
    #: Lookups answered from an entry past its refresh point because the fetch failed.
    stale_served: int = 0


@dataclass
class ValidationStats:
    #: Chain validations run (pyhanko-certvalidator, revocation checked per certificate).
    validations: int = 0
    #: :meth:`RevocationService.revocation_info` calls answered by a still-current result.
    reused: int = 0
    #: Calls that waited for a validation already running for the same chain.
    joined: int = 0


@dataclass(frozen=True)
class _Validated:
    """A chain validated with revocation data, and what that result rests on."""

    values: RevocationValues
    anchors: TrustAnchors
    #: The cache entries the validation read, each with the DER values it saw.
    sources: tuple[tuple[Kind, str, tuple[bytes, ...]], ...]
    #: Reused strictly before this instant (see the module docstring).
    until: datetime


@dataclass(frozen=True)
class _Entry:
    ders: tuple[bytes, ...]
    this_update: datetime
    #: When the entry stops being served at all (nextUpdate, capped).
    expires: datetime
    #: When a lookup starts a refresh instead of answering from the entry.
    refresh_at: datetime


#: The cache's schema (:mod:`sidecar.migrations`); "IF NOT EXISTS": a cache made before
#: the schema was versioned already has the tables.
_MIGRATIONS = (
    Migration(
        1,
        "revocation data",
        "CREATE TABLE IF NOT EXISTS revinfo ("
        " kind TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, der BLOB NOT NULL,"
        " this_update TEXT NOT NULL, expires TEXT NOT NULL, refresh_at TEXT NOT NULL,"
        " PRIMARY KEY (kind, key, seq));",
    ),
    Migration(
        2,
        "fetched issuer certificates",
        "CREATE TABLE IF NOT EXISTS certificates ("
        " sha256 BLOB PRIMARY KEY, der BLOB NOT NULL, not_after TEXT NOT NULL);",
    ),
)


class RevocationCache:
    """Shared store of OCSP responses and CRLs: memory, backed by SQLite (WAL)."""

    def __init__(
        self,
        database: Path | None,
        *,
        default_validity: float = 300.0,
        max_validity: float = 7 * 86400.0,
        refresh_margin: float = 60.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._database = database
        self._default_validity = timedelta(seconds=default_validity)
        self._max_validity = timedelta(seconds=max_validity)
        self._refresh_margin = timedelta(seconds=refresh_margin)
        self._now = now
        self._memory: dict[tuple[Kind, str], _Entry] = {}
        self._inflight: dict[tuple[Kind, str], asyncio.Task[tuple[bytes, ...]]] = {}
        self._db: sqlite3.Connection | None = None
        self._db_lock = threading.Lock()
        #: Fetched issuer certificates (DER), loaded at open (see the module docstring).
        self._certificates: dict[bytes, bytes] = {}
        self.stats = CacheStats()

    # ---- lifecycle

    async def open(self) -> None:
        """Open the database and load the entries still valid into memory."""
        if self._database is None:
            return
        try:
            await asyncio.to_thread(self._open_db)
        except (sqlite3.Error, MigrationError) as exc:
            # A full or read-only disk (no room for the WAL index): serve from memory.
            if storage_error("revocation cache", exc.__cause__ or exc) is None:
                raise
            log.warning("revocation cache: cannot open its file, memory only: %s", exc)

    async def close(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    def _open_db(self) -> None:
        assert self._database is not None
        open_private(self._database)
        db = sqlite3.connect(self._database, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        migrate(db, _MIGRATIONS, store="revocation cache")
        now = self._now().isoformat()
        try:
            with db:
                db.execute("DELETE FROM revinfo WHERE expires <= ?", (now,))
        except sqlite3.Error as exc:
            # A full or read-only disk: the expired rows stay (they are never served) and
            # the cache works from memory; anything else is a real fault.
            if storage_error("revocation cache", exc) is None:
                raise
            log.warning("revocation cache: cannot write to its file: %s", exc)
        rows = db.execute(
            "SELECT kind, key, der, this_update, expires, refresh_at FROM revinfo "
            "ORDER BY kind, key, seq"
        ).fetchall()
        loaded: dict[tuple[Kind, str], list[tuple[bytes, str, str, str]]] = {}
        for kind, key, der, this_update, expires, refresh_at in rows:
            loaded.setdefault((kind, key), []).append((der, this_update, expires, refresh_at))
        for cache_key, items in loaded.items():
            _, this_update, expires, refresh_at = items[0]
            self._memory[cache_key] = _Entry(
                ders=tuple(item[0] for item in items),
                this_update=datetime.fromisoformat(this_update),
                expires=datetime.fromisoformat(expires),
                refresh_at=datetime.fromisoformat(refresh_at),
            )
        with db:
            db.execute("DELETE FROM certificates WHERE not_after <= ?", (now,))
        for digest, der in db.execute("SELECT sha256, der FROM certificates ORDER BY rowid"):
            self._certificates[digest] = der
        self._db = db
        if loaded:
            log.info("revocation cache: %d entries still valid loaded from disk", len(loaded))

    # ---- fetched issuer certificates

    def certificates(self) -> list[x509.Certificate]:
        """The issuer certificates kept (path candidates, not anchors)."""
        return [x509.Certificate.load(der) for der in self._certificates.values()]

    async def keep_certificate(self, cert: x509.Certificate) -> None:
        """Keep a fetched issuer certificate, on disk too, for the next start."""
        if cert.sha256 in self._certificates or len(self._certificates) >= _MAX_CERTIFICATES:
            return
        der = cert.dump()
        self._certificates[cert.sha256] = der
        await asyncio.to_thread(self._store_certificate, cert.sha256, der, cert.not_valid_after)

    def _store_certificate(self, digest: bytes, der: bytes, not_after: datetime) -> None:
        db = self._db
        if db is None:
            return
        with self._db_lock, db:
            db.execute(
                "INSERT OR IGNORE INTO certificates VALUES (?, ?, ?)",
                (digest, der, not_after.isoformat()),
            )

    def _store_db(self, kind: Kind, key: str, entry: _Entry) -> None:
        db = self._db
        if db is None:
            return
        with self._db_lock, db:
            db.execute("DELETE FROM revinfo WHERE kind = ? AND key = ?", (kind, key))
            db.executemany(
                "INSERT INTO revinfo VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        kind,
                        key,
                        seq,
                        der,
                        entry.this_update.isoformat(),
                        entry.expires.isoformat(),
                        entry.refresh_at.isoformat(),
                    )
                    for seq, der in enumerate(entry.ders)
                ],
            )

    # ---- lookups

    def __len__(self) -> int:
        return len(self._memory)

    def now(self) -> datetime:
        """The cache's clock (injectable for tests); every expiry here is on it."""
        return self._now()

    @property
    def max_validity(self) -> timedelta:
        return self._max_validity

    def current(self, kind: Kind, key: str) -> tuple[tuple[bytes, ...], datetime] | None:
        """The DER values held for *key* and their refresh point, without fetching."""
        entry = self._memory.get((kind, key))
        return None if entry is None else (entry.ders, entry.refresh_at)

    async def obtain(
        self,
        kind: Kind,
        key: str,
        fetch: Callable[[], Awaitable[Sequence[bytes]]],
    ) -> tuple[bytes, ...]:
        """The cached DER objects for *key*, refreshed by *fetch* when due (single flight)."""
        entry = self._memory.get((kind, key))
        if entry is not None and self._now() < entry.refresh_at:
            self.stats.hits += 1
            return entry.ders
        task = self._inflight.get((kind, key))
        if task is None:
            task = asyncio.create_task(self._refresh(kind, key, fetch))
            self._inflight[(kind, key)] = task
            task.add_done_callback(lambda t: self._settled(kind, key, t))
        # A caller that gives up must not cancel the fetch the others are waiting for.
        return await asyncio.shield(task)

    def _settled(self, kind: Kind, key: str, task: asyncio.Task[tuple[bytes, ...]]) -> None:
        self._inflight.pop((kind, key), None)
        if not task.cancelled():
            task.exception()  # retrieved: waiters may all have gone

    async def _refresh(
        self, kind: Kind, key: str, fetch: Callable[[], Awaitable[Sequence[bytes]]]
    ) -> tuple[bytes, ...]:
        self.stats.fetches += 1
        try:
            ders = tuple(await fetch())
            entry = self._entry(kind, ders)
        except (OCSPFetchError, CRLFetchError, ValueError) as exc:
            self.stats.fetch_failures += 1
            stale = self._memory.get((kind, key))
            if stale is not None and self._now() < stale.expires:
                # The responder blips; what we hold is still inside its own validity.
                self.stats.stale_served += 1
                log.warning(
                    "%s fetch failed (%s); using the cached copy valid until %s",
                    kind.upper(),
                    exc,
                    stale.expires.isoformat(timespec="seconds"),
                )
                return stale.ders
            raise
        self._memory[(kind, key)] = entry
        try:
            await asyncio.to_thread(self._store_db, kind, key, entry)
        except sqlite3.Error as exc:  # the memory copy still serves; say why the disk did not
            log.warning("revocation cache: cannot write to its file: %s", exc)
        return ders

    def _entry(self, kind: Kind, ders: tuple[bytes, ...]) -> _Entry:
        if not ders:
            raise ValueError(f"no {kind.upper()} data to cache")
        now = self._now()
        this_updates: list[datetime] = []
        next_updates: list[datetime] = []
        for der in ders:
            this_update, next_update = (_ocsp_times if kind == "ocsp" else _crl_times)(der)
            this_updates.append(this_update)
            next_updates.append(next_update or this_update + self._default_validity)
        this_update = max(this_updates)
        expires = min([*next_updates, now + self._max_validity])
        # Refresh a little before expiry, but never spend more than half the lifetime early.
        margin = min(self._refresh_margin, max(expires - this_update, timedelta(0)) / 2)
        return _Entry(ders, this_update, expires, expires - margin)


def _ocsp_times(der: bytes) -> tuple[datetime, datetime | None]:
    response = ocsp.OCSPResponse.load(der)
    if response["response_status"].native != "successful":
        raise ValueError(f"OCSP status {response['response_status'].native}")
    singles = response.basic_ocsp_response["tbs_response_data"]["responses"]
    this_update = max(s["this_update"].native for s in singles)
    nexts = [s["next_update"].native for s in singles if s["next_update"].native is not None]
    return this_update, min(nexts) if nexts else None


def _crl_times(der: bytes) -> tuple[datetime, datetime | None]:
    tbs = crl.CertificateList.load(der)["tbs_cert_list"]
    return tbs["this_update"].native, tbs["next_update"].native


# ---------------------------------------------------------------- fetchers


class _CachingOCSPFetcher(OCSPFetcher):
    """pyhanko-certvalidator's OCSP fetcher behind the shared cache; one per context."""

    def __init__(self, service: RevocationService, budget: FetchBudget) -> None:
        self._service = service
        self._budget = budget
        self._responses: dict[bytes, list[ocsp.OCSPResponse]] = {}
        #: Cache entries read, with the values obtained (what a validation rests on).
        self.sources: dict[tuple[Kind, str], tuple[bytes, ...]] = {}

    async def fetch(
        self, cert: x509.Certificate | cms.AttributeCertificateV2, authority: Authority
    ) -> ocsp.OCSPResponse:
        service = self._service

        async def download() -> list[bytes]:
            # A fresh pyHanko fetcher each time: it memoizes results (failures too)
            # for its whole life, which is the cache's job here.
            fetcher = AIOHttpOCSPFetcher(
                service.session, per_request_timeout=service.timeout, budget=self._budget
            )
            async with service.observe("ocsp"):
                return [(await fetcher.fetch(cert, authority)).dump()]

        key = _cert_key(cert)
        ders = await service.cache.obtain("ocsp", key, download)
        self.sources[("ocsp", key)] = ders
        (der,) = ders
        response = ocsp.OCSPResponse.load(der)
        self._responses.setdefault(issuer_serial(cert), []).append(response)
        return response

    def fetched_responses(self) -> Iterable[ocsp.OCSPResponse]:
        return [r for responses in self._responses.values() for r in responses]

    def fetched_responses_for_cert(
        self, cert: x509.Certificate | cms.AttributeCertificateV2
    ) -> Iterable[ocsp.OCSPResponse]:
        return list(self._responses.get(issuer_serial(cert), ()))


class _CachingCRLFetcher(CRLFetcher):
    """pyhanko-certvalidator's CRL fetcher behind the shared cache; one per context."""

    def __init__(self, service: RevocationService, budget: FetchBudget) -> None:
        self._service = service
        self._budget = budget
        self._by_cert: dict[bytes, list[crl.CertificateList]] = {}
        self.sources: dict[tuple[Kind, str], tuple[bytes, ...]] = {}

    async def fetch(
        self, cert: x509.Certificate | cms.AttributeCertificateV2, *, use_deltas: bool | None = None
    ) -> Iterable[crl.CertificateList]:
        service = self._service
        deltas = True if use_deltas is None else use_deltas
        urls = sorted(
            url
            for point in get_relevant_crl_dps(cert, use_deltas=deltas)
            for url in enumerate_delivery_point_urls(point)
        )
        if not urls:
            self._by_cert[issuer_serial(cert)] = []
            return []

        async def download() -> list[bytes]:
            fetcher = AIOHttpCRLFetcher(
                service.session, per_request_timeout=service.timeout, budget=self._budget
            )
            async with service.observe("crl"):
                lists = list(await fetcher.fetch(cert, use_deltas=deltas))
                if not lists:
                    raise CRLFetchError(f"no CRL could be fetched from {', '.join(urls)}")
                return [c.dump() for c in lists]

        # Keyed by where the CRLs come from: every certificate of the CA shares them.
        key = ("delta:" if deltas else "") + " ".join(urls)
        ders = await service.cache.obtain("crl", key, download)
        self.sources[("crl", key)] = ders
        lists = [crl.CertificateList.load(der) for der in ders]
        self._by_cert[issuer_serial(cert)] = lists
        return lists

    def fetched_crls(self) -> Iterable[crl.CertificateList]:
        return [c for lists in self._by_cert.values() for c in lists]

    def fetched_crls_for_cert(
        self, cert: x509.Certificate | cms.AttributeCertificateV2
    ) -> Iterable[crl.CertificateList]:
        return self._by_cert[issuer_serial(cert)]  # KeyError: not fetched yet (the API says so)


def _cert_key(cert: x509.Certificate | cms.AttributeCertificateV2) -> str:
    return cert.sha256.hex() if isinstance(cert, x509.Certificate) else issuer_serial(cert).hex()


# ---------------------------------------------------------------- the facade


class RevocationService:
    """Revocation data and validation contexts backed by the shared cache."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        anchors: TrustAnchors,
        cache: RevocationCache,
        *,
        timeout: float = 10.0,
        limits: FetchLimits = FetchLimits(),  # noqa: B008 - frozen dataclass
        on_exchange: Callable[[str, str, float], None] | None = None,
    ) -> None:
        """*on_exchange(upstream, outcome, seconds)* is told of every OCSP/CRL download
        (not of cache hits), e.g. for metrics."""
        self._on_exchange = on_exchange
        self.session = session
        self.anchors = anchors
        self.cache = cache
        self.timeout = timeout
        self._limits = limits
        # Validated chains (see the module docstring for what makes one reusable).
        self._validated: dict[tuple[bytes, ...], _Validated] = {}
        self._validating: dict[tuple[bytes, ...], asyncio.Task[RevocationValues]] = {}
        self.validation_stats = ValidationStats()

    @asynccontextmanager
    async def observe(self, upstream: str) -> AsyncIterator[None]:
        started = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        except TimeoutError:
            outcome = "timeout"
            raise
        except (OCSPFetchError, CRLFetchError) as exc:
            cause = exc.__cause__
            outcome = "timeout" if isinstance(cause, TimeoutError) else "unavailable"
            raise
        finally:
            if self._on_exchange is not None:
                self._on_exchange(upstream, outcome, time.perf_counter() - started)

    def fetchers(self) -> Fetchers:
        """Fresh per-context fetchers over the shared cache and session."""
        budget = FetchBudget(self._limits)
        return Fetchers(
            ocsp_fetcher=_CachingOCSPFetcher(self, budget),
            crl_fetcher=_CachingCRLFetcher(self, budget),
            cert_fetcher=AIOHttpCertificateFetcher(
                self.session, per_request_timeout=self.timeout, budget=budget
            ),
        )

    def validation_context(
        self,
        *,
        other_certs: Iterable[x509.Certificate] = (),
        revinfo_policy: CertRevTrustPolicy = REQUIRE_REVINFO,
        trust_roots: Iterable[x509.Certificate] | None = None,
    ) -> ValidationContext:
        """A context for pyHanko (e.g. ``embed_validation_info=True``): fetching through
        the cache, our anchors, and revocation data required for the whole chain."""
        return ValidationContext(
            trust_roots=list(self.anchors.certificates if trust_roots is None else trust_roots),
            other_certs=list(other_certs),
            allow_fetching=True,
            fetchers=self.fetchers(),
            revinfo_policy=revinfo_policy,
        )

    async def revocation_info(self, chain: Sequence[x509.Certificate | bytes]) -> RevocationValues:
        """Validate *chain* (leaf first) with revocation data for each certificate.

        A result still current (module docstring: same cached OCSP/CRL values, none
        at its refresh point, every certificate inside its validity) is returned
        without validating again; concurrent calls for one chain share one validation.

        Raises :class:`CertificateRevoked`, :class:`RevocationUnavailable` (no data
        reachable or cached) or :class:`RevocationError` (no path to an anchor...).
        """
        certs = [c if isinstance(c, x509.Certificate) else x509.Certificate.load(c) for c in chain]
        if not certs:
            raise ValueError("an empty chain has no revocation data")
        key = tuple(c.sha256 for c in certs)
        known = self._validated.get(key)
        if known is not None and self._still_current(known):
            self.validation_stats.reused += 1
            return known.values
        task = self._validating.get(key)
        if task is None:
            task = asyncio.create_task(self._validate(key, certs))
            self._validating[key] = task
            task.add_done_callback(lambda t: self._validated_settled(key, t))
        else:
            self.validation_stats.joined += 1
        # A caller that gives up must not cancel the validation the others wait for.
        return await asyncio.shield(task)

    def forget_validated(self) -> None:
        """Drop every kept validation result (the next call per chain validates again)."""
        self._validated.clear()

    def _still_current(self, known: _Validated) -> bool:
        if known.anchors is not self.anchors or not self.cache.now() < known.until:
            return False
        for kind, key, ders in known.sources:
            held = self.cache.current(kind, key)
            # Refreshed since (new values) or dropped: what the result rests on changed.
            if held is None or held[0] != ders:
                return False
        return True

    def _validated_settled(
        self, key: tuple[bytes, ...], task: asyncio.Task[RevocationValues]
    ) -> None:
        self._validating.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: waiters may all have gone

    async def _validate(
        self, key: tuple[bytes, ...], certs: list[x509.Certificate]
    ) -> RevocationValues:
        anchors = self.anchors
        fetchers = self.fetchers()
        context = ValidationContext(
            trust_roots=list(anchors.certificates),
            other_certs=certs[1:],
            allow_fetching=True,
            fetchers=fetchers,
            revinfo_policy=REQUIRE_REVINFO,
        )
        validator = CertificateValidator(
            certs[0], intermediate_certs=certs[1:], validation_context=context
        )
        subject = certs[0].subject.human_friendly
        self.validation_stats.validations += 1
        try:
            path = await validator.async_validate_path()
        except RevokedError as exc:
            raise CertificateRevoked(f"{subject}: {exc}") from None
        except InsufficientRevinfoError as exc:
            raise RevocationUnavailable(f"{subject}: {exc}") from None
        except (PathBuildingError, ValidationError) as exc:
            raise ChainNotValid(f"{subject}: {exc}") from None

        ocsps = [r.dump() for r in context.ocsps]
        crls = [c.dump() for c in context.crls]
        unique: dict[bytes, x509.Certificate] = {}
        for cert in path.iter_certs(include_root=True):
            unique.setdefault(cert.sha256, cert)
        for response in context.ocsps:
            basic = response.basic_ocsp_response
            for cert in basic["certs"] or ():
                unique.setdefault(cert.sha256, cert)
        values = RevocationValues(
            ocsp_responses=tuple(dict.fromkeys(ocsps)),
            crls=tuple(dict.fromkeys(crls)),
            certificates=tuple(c.dump() for c in unique.values()),
            path=path,
        )
        ocsp_fetcher, crl_fetcher = fetchers.ocsp_fetcher, fetchers.crl_fetcher
        assert isinstance(ocsp_fetcher, _CachingOCSPFetcher)
        assert isinstance(crl_fetcher, _CachingCRLFetcher)
        sources = {**ocsp_fetcher.sources, **crl_fetcher.sources}
        until = self._reusable_until(sources, unique.values())
        if until is not None:
            self._keep(
                key,
                _Validated(
                    values, anchors, tuple((k, n, d) for (k, n), d in sources.items()), until
                ),
            )
        return values

    def _reusable_until(
        self,
        sources: dict[tuple[Kind, str], tuple[bytes, ...]],
        certs: Iterable[x509.Certificate],
    ) -> datetime | None:
        """Until when a validation resting on *sources* and *certs* may be reused, if at all."""
        now = self.cache.now()
        limits = [now + self.cache.max_validity]
        for (kind, key), ders in sources.items():
            held = self.cache.current(kind, key)
            if held is None or held[0] != ders:
                return None  # served stale or refreshed meanwhile: do not build on it
            limits.append(held[1])
        limits.extend(c.not_valid_after for c in certs)
        until = min(limits)
        return until if now < until else None

    def _keep(self, key: tuple[bytes, ...], validated: _Validated) -> None:
        if len(self._validated) >= _MAX_VALIDATED:
            now = self.cache.now()
            for stale in [k for k, v in self._validated.items() if not now < v.until]:
                del self._validated[stale]
            while len(self._validated) >= _MAX_VALIDATED:
                del self._validated[next(iter(self._validated))]
        self._validated[key] = validated
