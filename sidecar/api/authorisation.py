"""The PIN a calling practice software gives for one operation: ``X-Sidecar-PIN``.

Read once from the request's headers into an
:class:`~sidecar.keys.authorisation.Authorisation` (a wipeable buffer), never logged,
stored, or put in an answer; the authorisation is closed — the PIN zeroed — when the
operation ends. Why a header, and what it protects against: ``docs/pin.md``.
"""

from __future__ import annotations

import functools

from aiohttp import web

from ..i18n import N_
from ..keys import Authorisation, authorised
from .guards import Handler
from .problems import Problem

__all__ = ["PIN_HEADER", "operation_authorisation", "with_operation_pin"]

PIN_HEADER = "X-Sidecar-PIN"
#: PKCS#11 PINs are short; a longer value is not a PIN (and is not echoed either).
_MAX_PIN = 64


def operation_authorisation(
    request: web.Request, *, lifetime: float | None = None
) -> Authorisation | None:
    """The request's PIN as an authorisation, or ``None`` when it brought none.

    A malformed value is refused with a 400 that names the header, never its value.
    """
    value = request.headers.get(PIN_HEADER)
    if value is None:
        return None
    if not value or len(value) > _MAX_PIN or not value.isprintable():
        raise Problem(
            400,
            "bad_parameter",
            N_("{header}: a PIN is 1 to {limit} printable characters"),
            params={"header": PIN_HEADER, "limit": _MAX_PIN},
            parameter=PIN_HEADER,
        )
    return Authorisation(value, lifetime=lifetime)


def with_operation_pin(handler: Handler) -> Handler:
    """Run *handler* under the request's PIN (if any); the PIN is wiped when it returns."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        with authorised(operation_authorisation(request)):
            return await handler(request)

    return wrapped
