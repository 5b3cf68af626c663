"""``POST /v1/timestamps`` and the trust subsystem's lifecycle.

The body is either a caller's RFC 3161 TimeStampReq (``application/timestamp-query``),
relayed as it is, or any bytes with ``?hash=sha256|sha384|sha512``, for which the
daemon makes the request. Either way the TSA's TimeStampResp is returned unchanged,
and only after :func:`~sidecar.trust.tsa.check_reply` accepted it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from aiohttp import web

from ..config import ConfigError
from ..health import CheckResult
from ..trust import AnchorError, TrustServices, open_trust
from ..trust.tsa import (
    DIGEST_SIZES,
    RelayedReply,
    TsaError,
    parse_request,
)
from .guards import read_body
from .keys import HEALTH_CHECKS, HTTP_SESSION, PATHS, SANDBOX_PKI, SETTINGS
from .observe import METRICS
from .problems import bad_parameter, tsa_problem

if TYPE_CHECKING:
    from ..sandbox import SandboxPKI
    from ..trust.lists import ListPolicy

__all__ = ["HANDLERS", "TRUST", "create_timestamp", "trust_context"]

#: The trust layer (anchors, TSA client, revocation), for handlers and operations.
TRUST = web.AppKey("trust", TrustServices)

_TSQ = "application/timestamp-query"
_TSR = "application/timestamp-reply"


async def create_timestamp(request: web.Request) -> web.Response:
    """Relay a TimeStampReq, or timestamp the body's digest with ``?hash=``."""
    client = request.app[TRUST].tsa
    algorithm = request.query.get("hash")
    body = await read_body(request)
    if algorithm is not None:
        if algorithm not in DIGEST_SIZES:
            raise bad_parameter("hash", f"one of {', '.join(DIGEST_SIZES)} (got {algorithm!r})")
        if not body:
            raise bad_parameter("body", "the body is empty: send the bytes to timestamp")
        reply = await _call(client.timestamp_data(body, algorithm))
    else:
        if request.content_type != _TSQ:
            raise bad_parameter(
                "body",
                f"send an RFC 3161 TimeStampReq as {_TSQ}, or any bytes with ?hash=sha256",
            )
        try:
            tsq = parse_request(body)
        except ValueError as exc:
            raise bad_parameter("body", str(exc)) from None
        reply = await _call(client.relay(tsq))
    token = reply.token
    return web.Response(
        body=reply.response_der,
        content_type=_TSR,
        headers={
            # For callers who log what they got without parsing ASN.1.
            "X-Timestamp-Gen-Time": token.gen_time.isoformat(),
            "X-Timestamp-Serial": str(token.serial_number),
            "X-Timestamp-TSA": token.tsa_url,
        },
    )


async def _call(coro: Awaitable[RelayedReply]) -> RelayedReply:
    try:
        return await coro
    except TsaError as exc:
        raise tsa_problem(exc) from None


def _sandbox_list_policy(sandbox: SandboxPKI | None) -> ListPolicy | None:
    if sandbox is None:
        return None
    from ..sandbox.lists import ensure_sandbox_lists, sandbox_list_policy

    return sandbox_list_policy(ensure_sandbox_lists(sandbox))


async def trust_context(app: web.Application) -> AsyncIterator[None]:
    """Subsystem: build the trust layer; in sandbox mode trust its roots and use its TSA."""
    sandbox = app.get(SANDBOX_PKI)
    metrics = app.get(METRICS)
    opening = open_trust(
        app[SETTINGS].trust,
        session=app[HTTP_SESSION],
        data_dir=app[PATHS].data_dir,
        extra_anchor_files=[sandbox.roots_pem] if sandbox is not None else [],
        default_tsa_url=sandbox.tsa_url if sandbox is not None else None,
        # The sandbox publishes its own signed trusted lists (sidecar.sandbox.lists).
        list_policy=_sandbox_list_policy(sandbox),
        # Every TSA/OCSP/CRL exchange feeds sidecar_upstream_* on /metrics.
        on_exchange=metrics.upstream_done if metrics is not None else None,  # type: ignore[arg-type]
    )
    async with AsyncExitStack() as stack:
        try:
            trust = await stack.enter_async_context(opening)
        except (ValueError, AnchorError) as exc:
            # A start-up refusal with file, key and reason, like any configuration error.
            raise ConfigError(app[SETTINGS].source, "trust", str(exc)) from None
        app[TRUST] = trust

        async def check() -> CheckResult:
            # Breaker state only: a health probe must not buy timestamps (TSAs may bill).
            statuses = trust.tsa.status()
            data = {
                "tsa": [
                    {
                        "url": s.url,
                        "state": s.breaker.state,
                        "consecutive_failures": s.breaker.consecutive_failures,
                        **({"retry_after": s.breaker.retry_after} if s.breaker.retry_after else {}),
                    }
                    for s in statuses
                ],
                "anchors": len(trust.anchors),
                "revocation_cache_entries": len(trust.revocation.cache),
            }
            if not statuses:
                return CheckResult("tsa", "degraded", "no TSA configured", data)
            closed = [s for s in statuses if s.breaker.state != "open"]
            if len(closed) == len(statuses):
                return CheckResult("tsa", "ok", f"{len(statuses)} TSA(s) available", data)
            if closed:
                return CheckResult(
                    "tsa", "degraded", f"{len(statuses) - len(closed)} TSA(s) skipped", data
                )
            return CheckResult("tsa", "down", "every TSA is failing (circuits open)", data)

        app[HEALTH_CHECKS].append(("tsa", check))
        if trust.lists is not None:
            from .qualification import trusted_lists_check

            app[HEALTH_CHECKS].append(("trusted-lists", trusted_lists_check(app)))
        yield


HANDLERS = {"createTimestamp": create_timestamp}
