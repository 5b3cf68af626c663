"""What the daemon counts and measures, for ``GET /metrics`` and the status page.

One :class:`Metrics` per application, each with its own Prometheus registry (never
the process-wide default one), so that tests and several apps in one process do not
see each other's figures. Nothing here knows HTTP: the API layer times requests
(:mod:`sidecar.api.observe`); the operations count each signature they make
(:mod:`sidecar.operations.events`); the trust clients and the CNS outbox get the
services' ``Metrics`` (:class:`sidecar.operations.Services`) when they are built, and
call it directly::

    metrics.signature_made("xades", "B-LT")
    with metrics.upstream("tsa") as call:
        reply = await post(...)
        if reply.status >= 500:
            call.fail("error", f"the TSA answered HTTP {reply.status}")

Figures that are a state rather than an event (outbox depth, days until a
certificate expires) are read when scraped, from sources the owning subsystem
registers with :meth:`Metrics.watch_outbox` and :meth:`Metrics.watch_certificates`.

The same object keeps a short journal of recent errors in plain words
(:meth:`Metrics.record_error`), which the status page shows to the practice's IT
person. It never holds a token, PIN or document content: callers pass messages
written for a person, and exception texts are not copied into it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from . import __version__

__all__ = [
    "CONTENT_TYPE",
    "CertificateExpiry",
    "ErrorEntry",
    "Metrics",
    "OutboxStats",
    "UpstreamCall",
    "UpstreamOutcome",
]

log = logging.getLogger("sidecar.metrics")

#: Prometheus text exposition format 0.0.4, which every scraper reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: How an exchange with an upstream ended; mirrors the API's 502/503/504 codes.
UpstreamOutcome = Literal["ok", "error", "unavailable", "timeout"]

# The ``*_created`` series (one per label set) double the scrape for nothing a dashboard
# uses; the switch is process-wide, and only sidecar's registries live in the process.
disable_created_metrics()

#: Event-loop lag: from a tenth of a millisecond (an idle loop) to a second (a loop
#: blocked by a heavy step); the goal of #19 is p99 under 2 ms.
_LAG_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

#: How often the loop-lag ticker wakes (seconds): often enough to catch a 50 ms stall,
#: rare enough to cost nothing (a few microseconds per wake-up).
LAG_INTERVAL = 0.05

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: Upstream names in the words the status page uses.
_UPSTREAM_WORDS = {
    "tsa": "the timestamp authority (TSA)",
    "ocsp": "the OCSP responder",
    "crl": "the certificate revocation list (CRL) server",
    "cns": "the CNS",
}


@dataclass(frozen=True)
class OutboxStats:
    """The CNS outbox at one moment."""

    #: Messages per state (``queued``, ``sending``, ``delivered``, ``rejected``, ``failed``...).
    counts: Mapping[str, int]
    #: Age of the oldest message not yet delivered, rejected or failed; None if none.
    oldest_pending_seconds: float | None = None


@dataclass(frozen=True)
class CertificateExpiry:
    """A certificate the daemon depends on, and when it stops being valid."""

    #: What it is known as (a key id, a TSA name...).
    name: str
    #: ``signer``, ``tsa``, ``ocsp``, ``tls``...
    role: str
    not_after: datetime


@dataclass(frozen=True)
class ErrorEntry:
    """One line of the recent-errors journal."""

    time: datetime
    #: Where it happened: ``api``, ``tsa``, ``ocsp``, ``cns``, ``keys``...
    area: str
    #: For a person, in plain words; no secret, no document content.
    message: str

    def as_json(self) -> dict[str, str]:
        return {
            "time": self.time.isoformat(timespec="seconds"),
            "area": self.area,
            "message": self.message,
        }


_T = TypeVar("_T")

#: A function (sync or async) giving a value when scraped.
Source = Callable[[], _T | Awaitable[_T]]


@dataclass
class UpstreamCall:
    """One exchange with an upstream, as seen by :meth:`Metrics.upstream`."""

    upstream: str
    outcome: UpstreamOutcome = "ok"
    message: str | None = None
    _started: float = field(default_factory=time.perf_counter)

    def fail(self, outcome: UpstreamOutcome, message: str | None = None) -> None:
        """Mark the exchange failed although no exception was raised (an HTTP 5xx...)."""
        self.outcome = outcome
        self.message = message


class Metrics:
    """The metrics and recent errors of one daemon application."""

    def __init__(self, *, process: bool = True, journal_size: int = 50) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        if process:
            # CPU, memory, open files of this process (Linux /proc; nothing elsewhere).
            ProcessCollector(namespace="sidecar", registry=registry)
        Info("sidecar", "The daemon's version.", registry=registry).info({"version": __version__})
        Gauge(
            "sidecar_start_time_seconds",
            "When this daemon started (Unix time).",
            registry=registry,
        ).set(time.time())

        self.http_requests = Counter(
            "sidecar_http_requests",
            "HTTP requests answered, by route template and status code.",
            ("method", "route", "status"),
            registry=registry,
        )
        self.http_duration = Histogram(
            "sidecar_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and outcome "
            "(success, client_error, server_error).",
            ("method", "route", "outcome"),
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.signatures = Counter(
            "sidecar_signatures",
            "Signatures made, by format (xades, pades, cades) and level (B-B ... B-LTA).",
            ("format", "level"),
            registry=registry,
        )
        self.signature_failures = Counter(
            "sidecar_signature_failures",
            "Signatures attempted that failed, by format and reason code.",
            ("format", "reason"),
            registry=registry,
        )
        self.signing_duration = Histogram(
            "sidecar_signing_duration_seconds",
            "Time to produce a signature, timestamps and validation data included.",
            ("format", "level"),
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_requests = Counter(
            "sidecar_upstream_requests",
            "Exchanges with upstreams (tsa, ocsp, crl, cns) by outcome "
            "(ok, error, unavailable, timeout).",
            ("upstream", "outcome"),
            registry=registry,
        )
        self.upstream_duration = Histogram(
            "sidecar_upstream_duration_seconds",
            "Time of an exchange with an upstream, by outcome.",
            ("upstream", "outcome"),
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.cns_messages = Counter(
            "sidecar_cns_messages",
            "CNS messages by operation (deposit, cancel, pid_simulation...) and result "
            "(queued, delivered, rejected, failed, retried).",
            ("operation", "result"),
            registry=registry,
        )
        self.outbox_messages = Gauge(
            "sidecar_outbox_messages",
            "Messages in the CNS outbox, by state (read when scraped).",
            ("status",),
            registry=registry,
        )
        self.outbox_oldest_pending_age = Gauge(
            "sidecar_outbox_oldest_pending_age_seconds",
            "Age of the oldest outbox message not yet settled; 0 when there is none.",
            registry=registry,
        )
        self.certificate_days = Gauge(
            "sidecar_certificate_days_to_expiry",
            "Days until a certificate expires (negative: expired), by name and role.",
            ("name", "role"),
            registry=registry,
        )
        self.loop_lag = Histogram(
            "sidecar_event_loop_lag_seconds",
            "How late the daemon's event loop woke a ticker asleep for "
            f"{LAG_INTERVAL * 1000:g} ms (actual minus scheduled wake-up): the time "
            "something held the loop.",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "sidecar_errors",
            "Errors recorded in the recent-errors journal, by area.",
            ("area",),
            registry=registry,
        )
        self.source_failures = Counter(
            "sidecar_metrics_source_failures",
            "Scrape-time sources (outbox, certificates) that raised.",
            ("source",),
            registry=registry,
        )
        self._outbox_sources: list[Source[OutboxStats]] = []
        self._certificate_sources: list[Source[Iterable[CertificateExpiry]]] = []
        self._journal: deque[ErrorEntry] = deque(maxlen=journal_size)
        self._journal_lock = threading.Lock()

    # -- events ---------------------------------------------------------------------

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request answered (called by the API's observing middleware)."""
        if status < 400:
            outcome = "success"
        elif status < 500:
            outcome = "client_error"
        else:
            outcome = "server_error"
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_duration.labels(method, route, outcome).observe(seconds)

    def signature_made(self, format: str, level: str, seconds: float | None = None) -> None:
        """A signature was produced; *seconds* is how long it took, if measured."""
        self.signatures.labels(format, level).inc()
        if seconds is not None:
            self.signing_duration.labels(format, level).observe(seconds)

    def signature_failed(self, format: str, reason: str) -> None:
        """A signature could not be made; *reason* is the API's problem code."""
        self.signature_failures.labels(format, reason).inc()

    @contextmanager
    def signing(self, format: str, level: str) -> Iterator[None]:
        """Time a signature and count it when the block ends without an exception."""
        started = time.perf_counter()
        yield
        self.signature_made(format, level, time.perf_counter() - started)

    @contextmanager
    def upstream(self, upstream: str) -> Iterator[UpstreamCall]:
        """Time one exchange with *upstream* (``tsa``, ``ocsp``, ``crl``, ``cns``).

        An exception leaving the block counts as ``timeout`` (TimeoutError),
        ``unavailable`` (OSError: refused, reset, DNS) or ``error``, is journaled
        and re-raised. :meth:`UpstreamCall.fail` marks a failure without one.
        """
        call = UpstreamCall(upstream)
        try:
            yield call
        except TimeoutError:
            call.fail("timeout")
            raise
        except OSError as exc:
            call.fail("unavailable", f"{type(exc).__name__}")
            raise
        except Exception as exc:
            call.fail("error", f"{type(exc).__name__}")
            raise
        finally:
            elapsed = time.perf_counter() - call._started
            self.upstream_done(upstream, call.outcome, elapsed, call.message)

    def upstream_done(
        self,
        upstream: str,
        outcome: UpstreamOutcome,
        seconds: float,
        message: str | None = None,
    ) -> None:
        """Count an exchange measured elsewhere; a failure is also journaled.

        Its signature fits the trust layer's ``on_exchange(upstream, outcome, seconds)``.
        """
        self.upstream_requests.labels(upstream, outcome).inc()
        self.upstream_duration.labels(upstream, outcome).observe(seconds)
        if outcome != "ok":
            self.record_error(upstream, _upstream_words(upstream, outcome, message))

    def cns_message(self, operation: str, result: str) -> None:
        """A CNS message changed state (``queued``, ``delivered``, ``rejected``...)."""
        self.cns_messages.labels(operation, result).inc()

    async def sample_loop_lag(self, interval: float = LAG_INTERVAL) -> None:
        """Run until cancelled: sleep *interval* seconds, record how late the wake-up was.

        A step holding the loop for 300 ms delays the ticker by as much, and the
        sample lands in the 0.5 s bucket: the lag the next request would have felt.
        """
        loop = asyncio.get_running_loop()
        while True:
            scheduled = loop.time() + interval
            await asyncio.sleep(interval)
            self.loop_lag.observe(max(0.0, loop.time() - scheduled))

    # -- recent errors --------------------------------------------------------------

    def record_error(self, area: str, message: str) -> None:
        """Journal an error for the status page; *message* is for a person."""
        entry = ErrorEntry(datetime.now(UTC), area, message)
        with self._journal_lock:
            self._journal.append(entry)
        self.errors.labels(area).inc()

    def recent_errors(self, limit: int = 10) -> list[ErrorEntry]:
        """The latest errors, newest first."""
        with self._journal_lock:
            entries = list(self._journal)
        return entries[::-1][:limit]

    # -- read when scraped ----------------------------------------------------------

    def watch_outbox(self, source: Source[OutboxStats]) -> None:
        """Register a function (sync or async) giving the outbox's state when scraped."""
        self._outbox_sources.append(source)

    def watch_certificates(
        self,
        source: Source[Iterable[CertificateExpiry]],
    ) -> None:
        """Register a function (sync or async) listing certificates whose expiry to show."""
        self._certificate_sources.append(source)

    def watches(self, kind: Literal["outbox", "certificates"]) -> bool:
        """Whether a source of this kind is registered."""
        return bool(self._outbox_sources if kind == "outbox" else self._certificate_sources)

    async def refresh(self, now: datetime | None = None) -> None:
        """Read the registered sources into the gauges; call before rendering.

        A source that raises is counted and skipped: one broken subsystem must not
        take the whole scrape down with it.
        """
        now = now or datetime.now(UTC)
        outbox: list[OutboxStats] = []
        for source in self._outbox_sources:
            value = await self._read(source, "outbox")
            if value is not None:
                outbox.append(value)
        if self._outbox_sources:
            self.outbox_messages.clear()
            totals: dict[str, int] = {}
            oldest = 0.0
            for stats in outbox:
                for status, count in stats.counts.items():
                    totals[status] = totals.get(status, 0) + int(count)
                if stats.oldest_pending_seconds is not None:
                    oldest = max(oldest, stats.oldest_pending_seconds)
            for status, count in totals.items():
                self.outbox_messages.labels(status).set(count)
            self.outbox_oldest_pending_age.set(oldest)
        if self._certificate_sources:
            self.certificate_days.clear()
            for listing in self._certificate_sources:
                certificates = await self._read(listing, "certificates")
                for cert in certificates or ():
                    days = (cert.not_after - now).total_seconds() / 86400
                    self.certificate_days.labels(cert.name, cert.role).set(round(days, 3))

    async def _read(self, source: Source[_T], kind: str) -> _T | None:
        try:
            value = source()
            if inspect.isawaitable(value):
                return await value
            return value
        except Exception as exc:
            self.source_failures.labels(kind).inc()
            log.warning("metrics source for %s failed: %s", kind, type(exc).__name__)
            return None

    async def render(self) -> bytes:
        """The Prometheus text exposition, sources refreshed first."""
        await self.refresh()
        return generate_latest(self.registry)


def _upstream_words(upstream: str, outcome: UpstreamOutcome, message: str | None) -> str:
    who = _UPSTREAM_WORDS.get(upstream, upstream)
    what = {
        "timeout": f"{who} did not answer in time",
        "unavailable": f"{who} could not be reached",
        "error": f"{who} answered with an error",
        "ok": f"{who} answered",
    }.get(outcome, f"{who}: {outcome}")
    return f"{what} ({message})" if message else what
