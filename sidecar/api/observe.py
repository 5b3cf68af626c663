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

from ..metrics import CONTENT_TYPE, Metrics
from .appkeys import SERVICES
from .problems import Problem, problem_for

__all__ = ["HANDLERS", "get_metrics", "install", "observe_requests", "route_label"]


#: Label of requests that matched no route (404/405): one series, not one per path.
UNMATCHED = "(unmatched)"

# Refusals worth telling the practice's IT person about: a program configured with a
# wrong or revoked token, or the wrong scope. Other 4xx are the caller's own business.
_JOURNALED_CLIENT_ERRORS = frozenset({401, 403})


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
        metrics = _metrics(request.app)
        if metrics is not None:
            route = route_label(request)
            metrics.request_done(request.method, route, status, time.perf_counter() - started)
            if status >= 500 or status in _JOURNALED_CLIENT_ERRORS:
                metrics.record_error("api", _plain(request.method, route, status, problem))


def _metrics(app: web.Application) -> Metrics | None:
    services = app.get(SERVICES)
    return services.metrics if services is not None else None


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
    body = await request.app[SERVICES].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _loop_lag_ticker(app: web.Application) -> AsyncIterator[None]:
    """Context: sample the event loop's lag into ``sidecar_event_loop_lag_seconds``."""
    ticker = asyncio.ensure_future(app[SERVICES].metrics.sample_loop_lag())
    try:
        yield
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker


def install(app: web.Application) -> None:
    """The loop-lag ticker (a cleanup context: add it after the services'; the CNS
    registers its outbox's figures itself)."""
    app.cleanup_ctx.append(_loop_lag_ticker)


HANDLERS = {"getMetrics": get_metrics}
