"""The HTTP connection below the middlewares: parser errors, read timeouts (fenced).

aiohttp answers some requests before any middleware sees them: a request its HTTP
parser refuses (a malformed request line or header, a header over 8 KiB, bad
chunking...) and an ``Expect`` it does not know. It answers those in ``text/plain``,
echoing the offending bytes (an ``Authorization`` header among them) in the body and
in its error log. It also holds a connection whose client sends its request head
slowly for as long as the connection lives.

This module is the one place that reaches into aiohttp's connection handling, as
cryptography keeps its primitives under ``hazmat``. The hooks it relies on are
listed in :data:`PRIVATE_HOOKS` and checked by ``tests/test_http_surface.py``
(``test_aiohttp_hooks_fence``), which fails when an aiohttp upgrade moves one:

- ``web.Application._make_handler(**kwargs) -> web.Server`` (the runner's factory);
- ``web.Server._kwargs`` / ``web.Server._loop``, what ``Server.__call__`` builds a
  connection's :class:`~aiohttp.web.RequestHandler` from;
- ``RequestHandler.handle_error(request, status, exc, message)``, which renders the
  parser's refusals; ``RequestHandler.log_exception(*args, exc_info=...)``; and the
  handler's state ``_request_count`` (heads parsed on this connection), ``_waiter``
  (set while it waits for the next request) and ``_messages`` (heads parsed, not
  handled yet).

These answers come before aiohttp has parsed the head, so its ``Accept-Language`` is
read from the head's first bytes, kept for that purpose only (:meth:`_Connection.language`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from aiohttp import http_exceptions, web

from ..i18n import N_, negotiate
from .problems import Problem, problem_language, problem_response

__all__ = ["PRIVATE_HOOKS", "install_protocol"]

log = logging.getLogger("sidecar.api")

#: (owner, attribute) pairs of aiohttp this module uses that are not public API.
PRIVATE_HOOKS: tuple[tuple[str, str], ...] = (
    ("web.Application", "_make_handler"),
    ("web.Server", "_kwargs"),
    ("web.Server", "_loop"),
    ("web.RequestHandler", "handle_error"),
    ("web.RequestHandler", "log_exception"),
    ("web.RequestHandler", "_request_count"),
    ("web.RequestHandler", "_waiter"),
    ("web.RequestHandler", "_messages"),
)

#: How much of a request head is kept to find its Accept-Language (its first bytes).
_HEAD_KEPT = 8192
_ACCEPT_LANGUAGE = re.compile(rb"\r\naccept-language[ \t]*:[ \t]*([\x20-\x7e]{1,200})\r\n", re.I)

_NOT_HTTP = N_("the request is not valid HTTP")
# The parser's refusals, most specific first: a stable code and a detail of our own.
# The exception's own message is never shown nor logged: it quotes the raw line.
_PARSER_ERRORS: tuple[tuple[type[BaseException], int, str, str], ...] = (
    (
        http_exceptions.LineTooLong,
        431,
        "header_too_large",
        N_("the request line or a header line is over 8190 bytes"),
    ),
    (http_exceptions.BadHttpMethod, 400, "malformed_http", N_("not an HTTP request (bad method)")),
    (http_exceptions.InvalidURLError, 400, "malformed_http", N_("the request target is not valid")),
    (http_exceptions.InvalidHeader, 400, "malformed_http", N_("a header name or value is invalid")),
    (
        http_exceptions.PayloadEncodingError,
        400,
        "malformed_body",
        N_("the body's framing or encoding is invalid"),
    ),
    (http_exceptions.BadStatusLine, 400, "malformed_http", N_("the request line is not valid")),
    (http_exceptions.HttpProcessingError, 400, "malformed_http", _NOT_HTTP),
)


def _parser_problem(status: int, exc: BaseException | None) -> Problem:
    if status >= 500:
        return Problem(500, "internal_error", N_("internal error; see the daemon's log"))
    for exc_type, their_status, code, detail in _PARSER_ERRORS:
        if isinstance(exc, exc_type):
            return Problem(their_status, code, detail)
    return Problem(status, "malformed_http", _NOT_HTTP)


def _with_request_id(response: web.StreamResponse) -> web.StreamResponse:
    response.headers.setdefault("X-Request-Id", str(uuid.uuid4()))
    return response


class _Connection(web.RequestHandler):
    """One client connection: problem+json for the parser's refusals, a header deadline.

    The deadline runs from the connection's start, and from the first byte of each
    later request head, until that head is complete; past it the client gets a 408
    and the connection is closed. Idle time between requests is aiohttp's own
    ``keepalive_timeout``; a stalled body is bounded where it is read (``read_body``).
    """

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._heads_when_armed = 0
        self._head = b""  # the current head's first bytes, for its Accept-Language
        self._head_of = 0  # the _request_count when _head began

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        heads = self._request_count
        if heads != self._head_of:  # a head was parsed since: a new one starts
            self._head, self._head_of = b"", heads
        if len(self._head) < _HEAD_KEPT:
            self._head += data[: _HEAD_KEPT - len(self._head)]
        super().data_received(data)
        if self._request_count != heads:
            self._disarm_header_timer()
        elif data and self._header_timer is None and self._awaiting_head():
            self._arm_header_timer()

    def _awaiting_head(self) -> bool:
        # Only bytes that arrive while the connection waits for its next request start
        # a head: others are a body being handled or drained, or a pipelined head.
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages

    def _arm_header_timer(self) -> None:
        if self._header_timeout > 0:
            self._heads_when_armed = self._request_count
            self._header_timer = self._loop.call_later(self._header_timeout, self._header_deadline)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def language(self) -> str | None:
        """The ``Accept-Language`` of the head being received, as far as it came."""
        found = _ACCEPT_LANGUAGE.search(self._head)
        return found.group(1).decode("ascii") if found else None

    def _header_deadline(self) -> None:
        self._header_timer = None
        transport = self.transport
        if transport is None or self._request_count != self._heads_when_armed:
            return
        if not self._awaiting_head():
            return
        problem = Problem(
            408,
            "header_timeout",
            N_("the request head was not complete within {seconds} s"),
            params={"seconds": f"{self._header_timeout:g}"},
        )
        language = negotiate(self.language())
        body = json.dumps(problem.body(language=language), ensure_ascii=False).encode()
        transport.write(
            b"HTTP/1.1 408 Request Timeout\r\n"
            b"Content-Type: application/problem+json\r\n"
            + (f"Content-Language: {language}\r\n".encode() if language else b"")
            + f"Content-Length: {len(body)}\r\n".encode()
            + f"X-Request-Id: {uuid.uuid4()}\r\n".encode()
            + b"Connection: close\r\n\r\n"
            + body
        )
        log.info("closed a connection whose request head took over %g s", self._header_timeout)
        self.force_close()

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        # aiohttp drains a body the handler left unread after answering; one it cannot
        # decode (a lying Content-Encoding, bad chunking) is the client's fault, not
        # an "Unhandled exception" of the daemon's.
        exc = kwargs.get("exc_info")
        if isinstance(exc, web.RequestPayloadError):
            log.info("dropped an unread request body that cannot be decoded")
            return
        super().log_exception(*args, **kwargs)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # Logged by type only: the exception's text quotes the raw request bytes.
        if status >= 500:
            log.error("unhandled %s below the middlewares", type(exc).__name__)
        else:
            log.info(
                "refused a malformed HTTP request from %s: %s",
                request.remote,
                type(exc).__name__ if exc else status,
            )
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; it cannot become an error")
        problem_language.set(self.language())  # the connection closes after this answer
        response = problem_response(_parser_problem(status, exc))
        response.force_close()
        return _with_request_id(response)


def _outermost(
    handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """What the application raises before its middlewares run (an unknown ``Expect``)."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if exc.status == 417:
                problem = Problem(
                    417, "expectation_failed", N_("the only Expect understood is 100-continue")
                )
            else:
                problem = Problem(exc.status, "bad_request", exc.reason or "request refused")
            # The middlewares have not run: the caller's language is set here.
            problem_language.set(request.headers.get("Accept-Language"))
            return _with_request_id(problem_response(problem))

    return handle


class _Server(web.Server):
    header_timeout = 0.0

    def __call__(self) -> web.RequestHandler:
        return _Connection(
            self, loop=self._loop, header_timeout=self.header_timeout, **self._kwargs
        )


def _make_handler(
    app: web.Application, header_timeout: float, keepalive_timeout: float, **kwargs: Any
) -> web.Server:
    kwargs["keepalive_timeout"] = keepalive_timeout
    server = web.Application._make_handler(app, **kwargs)
    ours = _Server(
        _outermost(server.request_handler),
        request_factory=server.request_factory,
        handler_cancellation=server.handler_cancellation,
        loop=server._loop,
        **server._kwargs,
    )
    ours.header_timeout = header_timeout
    return ours


def install_protocol(
    app: web.Application, *, header_timeout: float, keepalive_timeout: float
) -> None:
    """Serve *app* through :class:`_Connection` with these timeouts (seconds; 0: none).

    Applies to whichever runner serves it (``sidecar serve``, aiohttp's test server).
    """
    # object.__setattr__: aiohttp's debug mode warns on any attribute set on an app.
    object.__setattr__(
        app, "_make_handler", partial(_make_handler, app, header_timeout, keepalive_timeout)
    )
