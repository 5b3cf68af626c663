"""Observing the API: per-route request metrics, ``GET /metrics``, recent errors.

:func:`observe_requests` sits right inside the error middleware, so it sees every
request the guards refuse as well as those the handlers answer, and it sees the
:class:`~sidecar.api.problems.Problem` itself (code and detail) before it is
rendered. Requests are labelled by route *template* (``/v1/cns/messages/{uuid}``),
never the raw path, which would make one time series per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from ..health import CheckResult
from ..metrics import CONTENT_TYPE, CertificateExpiry, Metrics
from ..signing.report import BASELINE_LEVELS
from .keys import HEALTH_CHECKS, OPERATION
from .problems import Problem, problem_for

__all__ = ["HANDLERS", "METRICS", "get_metrics", "install", "observe_requests", "route_label"]

#: The application's :class:`~sidecar.metrics.Metrics`; subsystems take it from here.
METRICS = web.AppKey("metrics", Metrics)

#: Label of requests that matched no route (404/405): one series, not one per path.
UNMATCHED = "(unmatched)"

# Refusals worth telling the practice's IT person about: a program configured with a
# wrong or revoked token, or the wrong scope. Other 4xx are the caller's own business.
_JOURNALED_CLIENT_ERRORS = frozenset({401, 403})


#: Signatures made by a route, read from its answer's headers: (format, header).
#: Counting at the API boundary keeps the engines free of it; a signature made
#: elsewhere (the CNS deposit signing an unsigned fee note) is counted by its caller.
_SIGNATURE_HEADERS: dict[str, tuple[tuple[str, str], ...]] = {
    "signXml": (("xades", "X-Signature-Level"),),
    "signPdf": (("pades", "X-Signature-Level"),),
    "signForm": (("xades", "X-Signature-Level"), ("pades", "X-Pdf-Signature-Level")),
}
_LEVELS = frozenset(level.value for level in BASELINE_LEVELS)


def route_label(request: web.Request) -> str:
    """The route template that matched *request*, or :data:`UNMATCHED`."""
    resource = request.match_info.route.resource
    if resource is None:
        return UNMATCHED
    return resource.canonical


@web.middleware
async def observe_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time each request by route and status; journal server errors."""
    started = time.perf_counter()
    status = 500
    problem: Problem | None = None
    try:
        response = await handler(request)
        status = response.status
        op = request.get(OPERATION)
        metrics = request.app.get(METRICS)
        if op is not None and metrics is not None and status < 300:
            for format, header in _SIGNATURE_HEADERS.get(op.operation_id, ()):
                level = response.headers.get(header)
                if level in _LEVELS:
                    metrics.signature_made(format, level)
        return response
    except Problem as exc:
        problem, status = exc, exc.status
        raise
    except web.HTTPException as exc:
        status = exc.status
        raise
    except Exception as exc:
        # A domain error (key locked, upstream down) the error middleware will map.
        problem = problem_for(exc)
        status = problem.status if problem is not None else 500
        raise
    finally:
        metrics = request.app.get(METRICS)
        if metrics is not None:
            route = route_label(request)
            metrics.request_done(request.method, route, status, time.perf_counter() - started)
            if status >= 500 or status in _JOURNALED_CLIENT_ERRORS:
                metrics.record_error("api", _plain(request.method, route, status, problem))


def _plain(method: str, route: str, status: int, problem: Problem | None) -> str:
    if problem is None:
        # Not a Problem: the error middleware logs the exception with the request id.
        return f"{method} {route} failed with an internal error (status {status}); see the log"
    if status == 401:
        return f"a program called {method} {route} without a valid token ({problem.detail})"
    if status == 403:
        return f"{method} {route} was refused: {problem.detail}"
    return f"{method} {route} answered {status} {problem.code}: {problem.detail}"


async def get_metrics(request: web.Request) -> web.Response:
    """``GET /metrics`` (admin scope): Prometheus text format."""
    body = await request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def _errors_check(metrics: Metrics) -> tuple[str, object]:
    async def check() -> CheckResult:
        # Always "ok": past errors are information for a person, and must not make
        # /v1/health flap for the monitoring that polls it.
        recent = metrics.recent_errors()
        if not recent:
            detail = "no errors since the daemon started"
        else:
            detail = f"{len(recent)} recent error(s); latest: {recent[0].message}"
        return CheckResult("errors", "ok", detail, {"recent": [e.as_json() for e in recent]})

    return ("errors", check)


async def _bridge_subsystems(app: web.Application) -> None:
    """Read key expiry from the key subsystem, which does not report it (the CNS
    subsystem registers its outbox's state itself).

    Runs once at startup, after every subsystem's context (``on_startup`` handlers run
    after the cleanup contexts). A subsystem that registers its own source with
    :meth:`~sidecar.metrics.Metrics.watch_certificates` / ``watch_outbox`` is left
    alone, so nothing is counted twice.
    """
    # Imported here: that module imports the API layer this one is part of.
    from .signing_keys import KEY_REGISTRY

    metrics = app[METRICS]
    registry = app.get(KEY_REGISTRY)
    if registry is not None and not metrics.watches("certificates"):

        def certificates() -> list[CertificateExpiry]:
            return [
                CertificateExpiry(info.id, "signer", info.not_after)
                for info in registry.describe()
                if info.not_after is not None
            ]

        metrics.watch_certificates(certificates)


async def _loop_lag_ticker(app: web.Application) -> AsyncIterator[None]:
    """Context: sample the event loop's lag into ``sidecar_event_loop_lag_seconds``."""
    ticker = asyncio.ensure_future(app[METRICS].sample_loop_lag())
    try:
        yield
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker


def install(app: web.Application, metrics: Metrics | None = None) -> Metrics:
    """Give *app* its own metrics, the loop-lag ticker and the recent-errors check."""
    metrics = metrics or Metrics()
    app[METRICS] = metrics
    app[HEALTH_CHECKS].append(_errors_check(metrics))  # type: ignore[arg-type]
    app.on_startup.append(_bridge_subsystems)
    app.cleanup_ctx.append(_loop_lag_ticker)
    return metrics


HANDLERS = {"getMetrics": get_metrics}
