"""The door: request ids, error rendering, Host/Origin guards, tokens, body limits.

Order matters and is fixed in :func:`middlewares`: the outermost one gives every
answer an ``X-Request-Id`` and turns every failure into problem+json; then the
Host and Origin guards refuse what a web page could send; then the client (its
token, or its TLS client certificate) and the route's scope; then the client's
request rate; then the body's declared size and type. Handlers see only requests
that passed all of these, and run under the client's key access
(:mod:`sidecar.keys.access`).
"""

from __future__ import annotations

import asyncio
import email.message
import functools
import hashlib
import ipaddress
import logging
import math
import re
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..clients import Client
from ..config import is_loopback_host
from ..i18n import N_
from ..keys.access import key_access
from ..logs import current_request_id, traceback_text
from ..ratelimit import RateLimiter, parse_rate
from .appkeys import (
    CLIENT,
    CLIENT_STORE,
    OPERATION,
    REQUEST_ID,
    SETTINGS,
)
from .contract import Operation
from .media import media_type, simple_header
from .observe import observe_requests
from .problems import Problem, problem_for, problem_language, problem_response

__all__ = ["middlewares", "read_body", "route_operations"]

log = logging.getLogger("sidecar.api")
access_log = logging.getLogger("sidecar.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_ROUTE_OPERATIONS = web.AppKey("route_operations", dict[web.AbstractRoute, Operation])

route_operations = _ROUTE_OPERATIONS


def _operation(request: web.Request) -> Operation | None:
    return request.app[_ROUTE_OPERATIONS].get(request.match_info.route)


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> Problem:
    if exc.status == 404:
        return Problem(
            404,
            "not_found",
            N_("no route {method} {path}"),
            params={"method": request.method, "path": request.path},
        )
    if exc.status == 405:
        allowed = sorted(getattr(exc, "allowed_methods", ()) or ())
        return Problem(
            405,
            "method_not_allowed",
            N_("{path} answers {methods}") if allowed else N_("{path} answers no method"),
            params={"path": request.path, "methods": ", ".join(allowed)},
            headers={"Allow": ", ".join(allowed)},
        )
    if exc.status == 413:
        return Problem(413, "too_large", N_("the request body is over the configured limit"))
    code = {400: "bad_request", 401: "unauthorized", 403: "forbidden"}.get(exc.status, "error")
    return Problem(exc.status, code, exc.reason or "request refused")


def _internal_error(request: web.Request, exc: Exception, request_id: str) -> web.Response:
    # The traceback without the machine's paths (file names only), in the log only.
    log.error(
        "unhandled %s while serving %s %s",
        type(exc).__name__,
        request.method,
        request.path,
        extra={"request_id": request_id, "traceback": traceback_text(exc)},
    )
    return problem_response(
        Problem(
            500,
            "internal_error",
            N_("internal error; the daemon's log has request id {request_id}"),
            params={"request_id": request_id},
        ),
        instance=request_id,
    )


@web.middleware
async def errors_and_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: request id, access log, and problem+json for every failure."""
    given = request.headers.get("X-Request-Id", "")
    request_id = given if _REQUEST_ID.match(given) else str(uuid.uuid4())
    request[REQUEST_ID] = request_id
    # For log lines written below the API layer (the raw cause of an upstream error).
    current_request_id.set(request_id)
    problem_language.set(request.headers.get("Accept-Language"))  # title/detail language
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        response = await handler(request)
    except Problem as problem:
        response = problem_response(problem, instance=request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = problem_response(_from_http_exception(request, exc), instance=request_id)
    except Exception as exc:
        mapped = problem_for(exc)
        if mapped is not None:
            if mapped.status >= 500:  # an engine's failure: the log says where
                log.error(
                    "%s (%s) while serving %s %s",
                    type(exc).__name__,
                    mapped.code,
                    request.method,
                    request.path,
                    extra={"request_id": request_id, "traceback": traceback_text(exc)},
                )
            response = problem_response(mapped, instance=request_id)
        else:
            response = _internal_error(request, exc, request_id)
    response.headers["X-Request-Id"] = request_id
    if response.headers.get("Connection") == "close":
        # A body left unread or unreadable: the connection cannot carry another request.
        response.force_close()
    if request.app[SETTINGS].log.access:
        client = request.get(CLIENT)
        access_log.info(
            "%s %s %d",
            request.method,
            request.path,
            response.status,
            extra={
                "request_id": request_id,
                "client": client.name if client else None,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
    return response


# RFC 9110 Host: a name or an IPv4 address, or an IPv6 literal in brackets; then
# optionally ":" and a port. Nothing else: "[::1].evil.example" is no loopback name.
_HOST = re.compile(
    r"(?:(?P<name>[a-z0-9_-]+(?:\.[a-z0-9_-]+)*)|\[(?P<ipv6>[0-9a-f:.]+)\])(?::(?P<port>[0-9]{1,5}))?",
)


def _host_name(host_header: str) -> str | None:
    """The host of a ``Host`` header, or ``None`` when the header is not exactly one."""
    match = _HOST.fullmatch(host_header.strip().lower())
    if match is None:
        return None
    if match["port"] is not None and int(match["port"]) > 65535:
        return None
    if match["ipv6"] is not None:
        try:
            return str(ipaddress.IPv6Address(match["ipv6"]))
        except ValueError:
            return None
    return str(match["name"])


def _configured_host(host: str) -> str:
    """A configured name or address as :func:`_host_name` spells it (IPv6 compressed)."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host.lower()


@functools.lru_cache(maxsize=64)
def _host_allowed(host_header: str, allowed_hosts: tuple[str, ...], host: str) -> bool:
    """Whether a ``Host`` header names this daemon (cached: a program sends the same
    one at every request, and reading addresses is most of the guard's cost)."""
    name = _host_name(host_header)
    allowed = {_configured_host(h) for h in allowed_hosts}
    if not is_loopback_host(host):
        allowed.add(_configured_host(host))
    return name is not None and (is_loopback_host(name) or name in allowed)


@web.middleware
async def host_and_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse DNS-rebinding (a foreign Host) and browsers from foreign origins."""
    server = request.app[SETTINGS].server
    host_header = request.headers.get("Host")
    if host_header is not None and not _host_allowed(
        host_header, tuple(server.allowed_hosts), server.host
    ):
        raise Problem(403, "forbidden", N_("the Host header names no address of this daemon"))
    origin = request.headers.get("Origin")
    if origin is None:
        return await handler(request)
    if origin not in server.allowed_origins:
        raise Problem(
            403, "forbidden", N_("requests from web pages of this origin are not allowed")
        )
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        response: web.StreamResponse = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE"
        response.headers["Access-Control-Allow-Headers"] = (
            "Authorization, Content-Type, X-Request-Id, X-Sidecar-PIN"
        )
        response.headers["Access-Control-Max-Age"] = "600"
    else:
        response = await handler(request)
    # Echo the one allowed origin: never "*".
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = "X-Request-Id, Retry-After"
    response.headers["Vary"] = "Origin"
    return response


def _printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable()


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    # Tokens are printable ASCII; other bytes (undecodable ones included) name no client.
    if scheme.lower() != "bearer" or not token.strip() or not _printable_ascii(token):
        raise Problem(
            401,
            "unauthorized",
            N_("use Authorization: Bearer <token>"),
            headers={"WWW-Authenticate": 'Bearer realm="sidecar"'},
        )
    return token.strip()


def _certificate_sha256(request: web.Request) -> str | None:
    """SHA-256 (hex) of the TLS client certificate of this connection, if it sent one
    (and, ``[server] client_ca`` being set, the handshake verified it)."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else None


def _unauthorized(
    detail: str, error: str | None = None, params: dict[str, Any] | None = None
) -> Problem:
    challenge = 'Bearer realm="sidecar"' + (f', error="{error}"' if error else "")
    return Problem(
        401, "unauthorized", detail, params=params, headers={"WWW-Authenticate": challenge}
    )


def _client(request: web.Request) -> Client | None:
    """Who is calling: the token's client, or the certificate's.

    A known client certificate needs no token; a token sent with it must be the same
    client's. A client registered with a certificate is refused without it: its
    token alone (stolen from a workstation's disk) is not enough.
    """
    store = request.app[CLIENT_STORE]
    fingerprint = _certificate_sha256(request)
    by_cert = store.by_certificate(fingerprint) if fingerprint else None
    token = _bearer(request)
    if token is None:
        return by_cert
    client = store.authenticate(token)
    if client is None:
        raise _unauthorized(N_("unknown token"), "invalid_token")
    if by_cert is not None and by_cert.name != client.name:
        raise _unauthorized(N_("the token and the TLS client certificate name different clients"))
    if client.cert_sha256 is not None and client.cert_sha256 != fingerprint:
        raise _unauthorized(
            N_("client {client!r} must present its TLS client certificate"),
            params={"client": client.name},
        )
    return client


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Token or certificate → client; the route's scope must be among the client's.

    The handler runs under the client's key access: the key registry refuses it the
    keys it may not use, whichever route chooses the key.
    """
    op = _operation(request)
    if op is None:  # unknown route or method: the router's 404/405 follows
        return await handler(request)
    request[OPERATION] = op
    client = _client(request)
    if client is not None:
        request[CLIENT] = client
    if op.scope is None:
        with key_access(client.key_access if client else None):
            return await handler(request)
    if client is None:
        raise Problem(
            401,
            "unauthorized",
            N_("this route needs Authorization: Bearer <token> (see default.token)"),
            headers={"WWW-Authenticate": 'Bearer realm="sidecar"'},
        )
    if op.scope not in client.scopes:
        raise Problem(
            403,
            "forbidden",
            N_("client {client!r} lacks the {scope!r} scope"),
            params={"client": client.name, "scope": op.scope.value},
        )
    with key_access(client.key_access):
        return await handler(request)


#: Never rate-limited: a load balancer's and a monitor's probes.
_UNLIMITED = frozenset({"getHealth", "getMetrics"})


def rate_limits() -> Any:
    """The middleware holding each client to its rate (one limiter per app)."""
    limiter = RateLimiter()

    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        op = request.get(OPERATION)
        client = request.get(CLIENT)
        if op is None or client is None or op.operation_id in _UNLIMITED:
            return await handler(request)
        configured = request.app[SETTINGS].server.rate_limit
        rate = client.rate or (parse_rate(configured) if configured else None)
        if rate is None:
            return await handler(request)
        wait = limiter.take(client.name, rate)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise Problem(
                429,
                "rate_limited",
                N_(
                    "too many requests from client {client!r}: at most {rate}; retry in {seconds} s"
                ),
                params={
                    "client": client.name,
                    "rate": client.rate_limit or configured,
                    "seconds": seconds,
                },
                headers={"Retry-After": str(seconds)},
            )
        return await handler(request)

    return rate_limit


def _limit(request: web.Request, op: Operation) -> int:
    return int(getattr(request.app[SETTINGS].limits, op.limit))


@web.middleware
async def body_rules(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Declared size and media type, checked before a byte of the body is read."""
    op = request.get(OPERATION)
    if op is None:
        return await handler(request)
    if not op.request_types:
        if request.content_length:
            raise Problem(
                400,
                "bad_parameter",
                N_("{method} {path} takes no body"),
                params={"method": op.method, "path": op.path},
            )
        return await handler(request)
    limit = _limit(request, op)
    if request.content_length is not None and request.content_length > limit:
        raise Problem(
            413,
            "too_large",
            N_("the body has {size} bytes; this route takes at most {limit}"),
            params={"size": request.content_length, "limit": limit},
            limit=limit,
        )
    given = media_type(request)
    if "*/*" not in op.request_types and given not in op.request_types:
        raise Problem(
            415,
            "unsupported_media_type",
            N_("Content-Type {given!r} is not accepted here; send {accepted}"),
            params={"given": given, "accepted": " or ".join(op.request_types)},
            accepted=list(op.request_types),
        )
    if given == "multipart/form-data":
        _check_boundary(request.headers.get("Content-Type", ""))
    return await handler(request)


# RFC 2046 section 5.1.1: 1-70 of these, the last not a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


def _check_boundary(content_type: str) -> None:
    simple = simple_header(content_type)
    boundary: Any
    if simple is not None:
        boundary = simple[1].get("boundary")
    else:  # not a simple header: the e-mail parser's reading
        header = email.message.Message()
        header["Content-Type"] = content_type
        boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not _BOUNDARY.fullmatch(boundary):
        raise Problem(
            400,
            "bad_parameter",
            N_(
                "Content-Type: a multipart body needs a boundary of 1-70 ASCII letters, "
                "digits or '()+_,-./:=? (RFC 2046)"
            ),
            parameter="boundary",
        )


async def read_body(request: web.Request) -> bytes:
    """The whole body, refused with 413 as soon as it passes the route's limit.

    Content-Length was checked by :func:`body_rules`; this also bounds a chunked
    body, which declares no length. A body that stalls longer than
    ``[server] body_timeout`` between two reads gets 408; one aiohttp cannot
    decode (bad chunking, a ``Content-Encoding`` it does not match) gets 400.
    """
    op: Operation = request[OPERATION]
    limit = _limit(request, op)
    stall = request.app[SETTINGS].server.body_timeout
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            async with asyncio.timeout(stall):
                chunk = await request.content.read(64 * 1024)
        except TimeoutError:
            raise Problem(
                408,
                "body_timeout",
                N_("the body stalled: no byte for {seconds} s"),
                params={"seconds": f"{stall:g}"},
                headers={"Connection": "close"},
            ) from None
        except web.RequestPayloadError:
            # The rest of the body is unreadable: end it here, so that aiohttp does
            # not try to drain it after the answer (and log that as unhandled).
            request.content.feed_eof()
            # Not aiohttp's message: it may quote bytes of the body.
            raise Problem(
                400,
                "malformed_body",
                N_("the body cannot be read: its chunked framing or Content-Encoding is invalid"),
                headers={"Connection": "close"},
            ) from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise Problem(
                413,
                "too_large",
                N_("the body is over this route's {limit} bytes"),
                params={"limit": limit},
            )
        chunks.append(chunk)


def not_implemented(op: Operation) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise Problem(
            501,
            "not_implemented",
            N_("{method} {path} is part of the contract but not built in this version"),
            params={"method": op.method, "path": op.path},
        )

    return handler


def middlewares() -> list[Any]:
    # observe_requests sits inside the error middleware so that it sees every Problem.
    return [
        errors_and_ids,
        observe_requests,
        host_and_origin,
        authenticate,
        rate_limits(),
        body_rules,
    ]
