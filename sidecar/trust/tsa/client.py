"""The RFC 3161 client: several TSAs in configuration order, each reply checked
(:func:`~sidecar.trust.tsa.check.check_reply`) before use.

TSAs are tried in configuration order. Each has its own timeout, a bounded number of
attempts for transient failures (refused/reset connection, HTTP 5xx) and a
:class:`~sidecar.trust.breaker.CircuitBreaker`, so a dead TSA is skipped without a
connection attempt until its cool-down ends.

A token that leaves out the TSA's issuing CA needs it fetched (the certificate's
caIssuers URL), often from the host that also serves OCSP and CRLs. Fetched issuers
are kept (``keep_issuer``, on disk in the revocation cache), and handed back at the
next start (``known_certs``), so that a restart does not depend on that host. When it
is unreachable and the issuer is not known, the reply cannot be checked *now*:
:class:`TsaIssuerUnavailable` (an upstream unavailable, retry later), which says
nothing against the TSA and leaves its breaker as it was.

Engines use :meth:`TimeStampClient.timestamp` (XAdES) or
:meth:`TimeStampClient.timestamper` (a pyHanko ``TimeStamper`` going through these
checks, for PAdES); the API relays callers' requests with :meth:`TimeStampClient.relay`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp
from asn1crypto import cms, tsp, x509
from pyhanko.sign.timestamps import TimeStamper
from pyhanko_certvalidator.errors import CertificateFetchError
from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpCertificateFetcher
from pyhanko_certvalidator.fetchers.api import FetchLimits
from pyhanko_certvalidator.fetchers.common_utils import FetchBudget, gather_aia_issuer_urls
from pyhanko_certvalidator.registry import SimpleCertificateStore

from ...config import BreakerSettings
from ...upstream import connection_words, describe
from ..anchors import TrustAnchors
from ..breaker import BreakerStatus, CircuitBreaker
from .check import _log_cause, check_reply
from .endpoint import TsaEndpoint
from .errors import (
    TsaError,
    TsaIssuerUnavailable,
    TsaRejected,
    TsaReplyError,
    TsaTimeout,
    TsaUnavailable,
)
from .paths import TsaPathCache
from .token import (
    DIGEST_SIZES,
    RelayedReply,
    TimeStampToken,
    _check_imprint,
    complete_chain,
    make_request,
)

log = logging.getLogger("sidecar.trust.tsa")


#: A TimeStampResp with a full chain is a few KB; refuse to buffer more than this.
MAX_REPLY_BYTES = 256 * 1024
_TSQ = "application/timestamp-query"
_TSR = "application/timestamp-reply"


# failInfo values meaning "this TSA cannot now", as opposed to "your request is wrong".
_TRANSIENT_FAIL_INFO = frozenset({"time_not_available", "system_failure"})


@dataclass(frozen=True)
class TsaStatus:
    url: str
    breaker: BreakerStatus
    last_success: float | None
    last_failure: float | None
    last_error: str | None


#: Told of each upstream exchange: (upstream, outcome, seconds).
ExchangeObserver = Callable[[str, str, float], None]


#: caIssuers URLs tried per certificate.
_MAX_ISSUER_URLS = 4


# ---------------------------------------------------------------- client


async def fetch_issuers(
    session: aiohttp.ClientSession, cert: x509.Certificate, *, per_request: float
) -> list[x509.Certificate]:
    """The certificates at *cert*'s caIssuers URLs; CertificateFetchError when none
    of those URLs could be read (pyHanko's own helper would just skip them)."""
    fetcher = AIOHttpCertificateFetcher(
        session,
        per_request_timeout=per_request,
        budget=FetchBudget(FetchLimits(max_requests=4, max_cert_requests=4)),
    )
    found: list[x509.Certificate] = []
    errors: list[CertificateFetchError] = []
    for url in list(gather_aia_issuer_urls(cert))[:_MAX_ISSUER_URLS]:
        try:
            found += await fetcher.fetch_certs(url, url_origin_type="certificate")
        except CertificateFetchError as exc:
            errors.append(exc)
    if errors and not found:
        raise errors[0]
    return found


class _Tsa:
    """An endpoint and its running state."""

    def __init__(self, endpoint: TsaEndpoint, breaker: CircuitBreaker) -> None:
        self.endpoint = endpoint
        self.breaker = breaker
        self.last_success: float | None = None
        self.last_failure: float | None = None
        self.last_error: str | None = None
        #: HTTP requests started (for tests and metrics: a skipped TSA adds none).
        self.attempts = 0


class TimeStampClient:
    """RFC 3161 client over the daemon's shared aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoints: Sequence[TsaEndpoint],
        anchors: TrustAnchors,
        *,
        clock_skew: float = 60.0,
        breaker: BreakerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_exchange: ExchangeObserver | None = None,
        known_certs: Sequence[x509.Certificate] = (),
        keep_issuer: Callable[[x509.Certificate], Awaitable[None]] | None = None,
    ) -> None:
        """*on_exchange(upstream, outcome, seconds)* is told of every HTTP attempt
        (``outcome``: ok, error, unavailable, timeout), e.g. for metrics.

        *known_certs*: issuer certificates fetched before (candidates for the path,
        never anchors); *keep_issuer* is handed each newly fetched one to keep."""
        breaker = breaker or BreakerSettings()
        self._on_exchange = on_exchange
        self._session = session
        self._anchors = anchors
        self._clock_skew = clock_skew
        self._retry_delay = breaker.retry_delay
        self._cool_down = breaker.cool_down
        self._tsas = [
            _Tsa(ep, CircuitBreaker(breaker.failure_threshold, breaker.cool_down, clock=clock))
            for ep in endpoints
        ]
        # TSA certificates seen in checked tokens: lets a caller's certReq=false reply
        # (no certificates inside) still be checked.
        self._known_certs = SimpleCertificateStore()
        for cert in known_certs:
            self._known_certs.register(cert)
        self._keep_issuer = keep_issuer
        self._timestamper: CheckedTimeStamper | None = None
        #: Validated TSA certificate paths (what is kept and how long: TsaPathCache).
        self.paths = TsaPathCache()
        #: Per TSA URL, the chain of its last checked token (the trusted lists judge it).
        self.last_chains: dict[str, tuple[x509.Certificate, ...]] = {}

    @property
    def anchors(self) -> TrustAnchors:
        return self._anchors

    @anchors.setter
    def anchors(self, anchors: TrustAnchors) -> None:
        # The trusted lists changed (sidecar.trust.lists); the path cache keys on the
        # anchors object, so nothing validated against the old set is reused.
        self._anchors = anchors

    @property
    def endpoints(self) -> tuple[TsaEndpoint, ...]:
        return tuple(t.endpoint for t in self._tsas)

    def attempts(self, url: str) -> int:
        """HTTP requests started towards *url* so far."""
        return sum(t.attempts for t in self._tsas if t.endpoint.url == url)

    def status(self) -> list[TsaStatus]:
        return [
            TsaStatus(
                t.endpoint.url, t.breaker.status(), t.last_success, t.last_failure, t.last_error
            )
            for t in self._tsas
        ]

    async def timestamp(self, digest: bytes, algorithm: str = "sha256") -> TimeStampToken:
        """A checked token over *digest* (the hash, by *algorithm*, of what is stamped)."""
        _check_imprint(algorithm, digest)

        def request_for(endpoint: TsaEndpoint) -> tsp.TimeStampReq:
            return make_request(digest, algorithm, policy=endpoint.policy)

        return (await self._exchange(request_for)).token

    async def timestamp_data(self, data: bytes, algorithm: str = "sha256") -> RelayedReply:
        """Hash *data* with *algorithm* and timestamp it; the TSA's reply and the token."""
        if algorithm not in DIGEST_SIZES:
            raise ValueError(f"hash algorithm {algorithm!r} is not accepted")
        digest = hashlib.new(algorithm, data).digest()
        reply = await self._exchange(
            lambda endpoint: make_request(digest, algorithm, policy=endpoint.policy)
        )
        return RelayedReply(complete_chain(reply.response_der, reply.token), reply.token)

    async def relay(self, request: tsp.TimeStampReq) -> RelayedReply:
        """Send a caller's request as it is; the TSA's reply once checked.

        When the caller asked for certificates (``certReq``), intermediates the TSA
        left out are added (:func:`complete_chain`), so the token verifies against
        the roots alone.
        """
        reply = await self._exchange(lambda _endpoint: request)
        if request["cert_req"].native:
            reply = RelayedReply(complete_chain(reply.response_der, reply.token), reply.token)
        return reply

    async def _fetch_issuers(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """:func:`fetch_issuers`, each newly found issuer kept (memory, then *keep_issuer*)."""
        timeout = min(10.0, max(e.timeout for e in self.endpoints))
        found = await fetch_issuers(self._session, cert, per_request=timeout)
        for issuer in found:
            if self._known_certs.register(issuer) and self._keep_issuer is not None:
                try:
                    await self._keep_issuer(issuer)
                except Exception as exc:  # kept in memory still; the disk is a convenience
                    log.warning("cannot keep the fetched issuer certificate: %s", describe(exc))
        return found

    def timestamper(self) -> CheckedTimeStamper:
        """A pyHanko ``TimeStamper`` over this client; one instance, reused (size estimate)."""
        if self._timestamper is None:
            self._timestamper = CheckedTimeStamper(self)
        return self._timestamper

    # ---- the exchange

    async def _exchange(
        self, request_for: Callable[[TsaEndpoint], tsp.TimeStampReq]
    ) -> RelayedReply:
        if not self._tsas:
            raise TsaUnavailable(
                "no TSA is configured ([[trust.tsa]] in the configuration)",
                reason="not_configured",
                retry_after=60,
            )
        failures: list[TsaError] = []
        for tsa in self._tsas:
            if not tsa.breaker.allow():
                failures.append(
                    TsaUnavailable(
                        f"TSA {tsa.endpoint.url}: skipped, circuit open after "
                        f"{tsa.breaker.failure_threshold} failures ({tsa.last_error})",
                        url=tsa.endpoint.url,
                        reason="circuit_open",
                        retry_after=tsa.breaker.retry_after(),
                    )
                )
                continue
            try:
                result = await self._try(tsa, request_for(tsa.endpoint))
            except TsaIssuerUnavailable as exc:
                # The TSA answered; its issuer's host did not: no verdict on the TSA.
                tsa.breaker.release()
                log.warning("%s", exc)
                failures.append(exc)
            except TsaRejected as exc:
                # The TSA is alive and said no. A request it finds wrong would be wrong
                # for the others too; only "cannot now" is worth the next TSA.
                self._succeeded(tsa)
                if not set(exc.fail_info) & _TRANSIENT_FAIL_INFO:
                    raise
                failures.append(exc)
            except TsaError as exc:
                self._failed(tsa, exc)
                failures.append(exc)
            except BaseException:
                tsa.breaker.release()  # cancelled: no verdict on this TSA
                raise
            else:
                self._succeeded(tsa)
                return result
        raise self._summary(failures)

    async def _try(self, tsa: _Tsa, request: tsp.TimeStampReq) -> RelayedReply:
        endpoint = tsa.endpoint
        body = request.dump()
        for attempt in range(1, endpoint.attempts + 1):
            started = time.perf_counter()
            try:
                result = await self._attempt(tsa, request, body)
            except _Transient as exc:
                self._observe(_outcome(exc.error), started)
                if attempt < endpoint.attempts:
                    log.info("TSA %s: %s; retrying", endpoint.url, exc)
                    await asyncio.sleep(self._retry_delay * attempt)
                    continue
                raise exc.error from None
            except TsaError as exc:
                self._observe(_outcome(exc), started)
                raise
            self._observe("ok", started)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _observe(self, outcome: str, started: float) -> None:
        if self._on_exchange is not None:
            self._on_exchange("tsa", outcome, time.perf_counter() - started)

    async def _attempt(self, tsa: _Tsa, request: tsp.TimeStampReq, body: bytes) -> RelayedReply:
        endpoint = tsa.endpoint
        reply = await self._post(tsa, body)
        token = await check_reply(
            request,
            reply,
            url=endpoint.url,
            anchors=self._anchors,
            clock_skew=self._clock_skew,
            expected_policy=endpoint.policy,
            other_certs=list(self._known_certs),
            fetch_issuers=self._fetch_issuers,
            paths=self.paths,
        )
        for cert in token.chain:
            self._known_certs.register(cert)
        self.last_chains[endpoint.url] = tuple(token.chain)
        return RelayedReply(reply, token)

    async def _post(self, tsa: _Tsa, body: bytes) -> bytes:
        endpoint = tsa.endpoint
        tsa.attempts += 1
        headers = {"Content-Type": _TSQ, "Accept": _TSR}
        if endpoint.authorization is not None:
            headers["Authorization"] = endpoint.authorization
        try:
            async with self._session.post(
                endpoint.url,
                data=body,
                headers=headers,
                ssl=endpoint.ssl_context or True,
                timeout=aiohttp.ClientTimeout(total=endpoint.timeout),
                allow_redirects=False,
            ) as response:
                if response.status >= 500:
                    raise _Transient(
                        TsaReplyError(
                            f"TSA {endpoint.url} answered HTTP {response.status}",
                            url=endpoint.url,
                            reason="http_error",
                        )
                    )
                if response.status != 200:
                    raise TsaReplyError(
                        f"TSA {endpoint.url} answered HTTP {response.status}"
                        + (
                            " (check the configured credentials)"
                            if response.status in (401, 403)
                            else ""
                        ),
                        url=endpoint.url,
                        reason="http_error",
                    )
                if response.content_type != _TSR:
                    raise TsaReplyError(
                        f"TSA {endpoint.url} answered {response.content_type or 'no content type'}"
                        f", not {_TSR}",
                        url=endpoint.url,
                        reason="malformed",
                    )
                data = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    data += chunk
                    if len(data) > MAX_REPLY_BYTES:
                        raise TsaReplyError(
                            f"TSA {endpoint.url}: reply over {MAX_REPLY_BYTES} bytes",
                            url=endpoint.url,
                            reason="malformed",
                        )
                return bytes(data)
        except TsaError:
            raise  # ours, from inside the block (TsaError is an OSError, as pyHanko's is)
        except TimeoutError:
            raise TsaTimeout(
                f"TSA {endpoint.url} did not answer within {endpoint.timeout:g} s",
                url=endpoint.url,
            ) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            _log_cause(endpoint.url, "no answer", exc)
            raise _Transient(
                TsaUnavailable(
                    f"TSA {endpoint.url} unreachable ({connection_words(exc)})",
                    url=endpoint.url,
                    retry_after=self._cool_down,
                )
            ) from None
        except aiohttp.ClientError as exc:
            _log_cause(endpoint.url, "unusable HTTP answer", exc)
            raise TsaReplyError(
                f"TSA {endpoint.url}: the HTTP answer is unusable",
                url=endpoint.url,
                reason="http_error",
            ) from None

    def _succeeded(self, tsa: _Tsa) -> None:
        tsa.breaker.record_success()
        tsa.last_success = time.time()

    def _failed(self, tsa: _Tsa, exc: TsaError) -> None:
        tsa.breaker.record_failure()
        tsa.last_failure = time.time()
        tsa.last_error = str(exc)
        log.warning("%s", exc)
        if tsa.breaker.state == "open":
            log.warning(
                "TSA %s: circuit open, skipped for %g s", tsa.endpoint.url, tsa.breaker.cool_down
            )

    def _summary(self, failures: list[TsaError]) -> TsaError:
        """One error for the caller: a bad answer beats a timeout beats unreachable."""
        message = "no TSA gave a usable timestamp: " + "; ".join(str(f) for f in failures)
        replies = [f for f in failures if isinstance(f, TsaReplyError)]
        summary: TsaError
        if replies:
            summary = TsaReplyError(message, url=replies[0].url, reason=replies[0].reason)
        elif any(isinstance(f, TsaTimeout) for f in failures):
            summary = TsaTimeout(message)
        else:
            waits = [f.retry_after for f in failures if isinstance(f, TsaUnavailable)]
            summary = TsaUnavailable(
                message,
                retry_after=max(1, math.ceil(min(waits))) if waits else self._cool_down,
                reason=failures[0].reason if len({f.reason for f in failures}) == 1 else None,
            )
        summary.failures = tuple(failures)
        return summary


def _outcome(exc: TsaError) -> str:
    if isinstance(exc, TsaIssuerUnavailable):
        return "ok"  # the exchange with the TSA was; its issuer's host was not
    if isinstance(exc, TsaTimeout):
        return "timeout"
    if isinstance(exc, TsaUnavailable):
        return "unavailable"
    return "error"


class _Transient(Exception):
    """A failure worth another attempt at the same TSA; carries the error to report."""

    def __init__(self, error: TsaError) -> None:
        super().__init__(str(error))
        self.error = error


class CheckedTimeStamper(TimeStamper):
    """A pyHanko ``TimeStamper`` whose tokens come from :class:`TimeStampClient`.

    pyHanko's own ``HTTPTimeStamper`` checks status and nonce only; this one hands
    pyHanko tokens that passed every check of :func:`check_reply`, with failover.
    Reuse one instance: pyHanko spends one timestamp per instance to estimate sizes.
    """

    def __init__(self, client: TimeStampClient) -> None:
        super().__init__(include_nonce=True)
        self._client = client

    async def async_timestamp(self, message_digest: bytes, md_algorithm: str) -> cms.ContentInfo:
        token = await self._client.timestamp(message_digest, md_algorithm)
        return token.content_info

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        reply = await self._client.relay(req)
        return tsp.TimeStampResp.load(reply.response_der)
