"""``POST /v1/timestamps``.

The body is either a caller's RFC 3161 TimeStampReq (``application/timestamp-query``),
relayed as it is, or any bytes with ``?hash=sha256|sha384|sha512``, for which the
daemon makes the request. Either way the TSA's TimeStampResp is returned unchanged,
and only after :func:`~sidecar.trust.tsa.check_reply` accepted it.
"""

from __future__ import annotations

from aiohttp import web

from ..operations.timestamps import relay_timestamp, timestamp_data
from ..trust.tsa import (
    DIGEST_SIZES,
    parse_request,
)
from .appkeys import SERVICES
from .guards import read_body
from .problems import bad_parameter

__all__ = ["HANDLERS", "create_timestamp"]

_TSQ = "application/timestamp-query"
_TSR = "application/timestamp-reply"


async def create_timestamp(request: web.Request) -> web.Response:
    """Relay a TimeStampReq, or timestamp the body's digest with ``?hash=``."""
    services = request.app[SERVICES]
    algorithm = request.query.get("hash")
    body = await read_body(request)
    if algorithm is not None:
        if algorithm not in DIGEST_SIZES:
            raise bad_parameter("hash", f"one of {', '.join(DIGEST_SIZES)} (got {algorithm!r})")
        if not body:
            raise bad_parameter("body", "the body is empty: send the bytes to timestamp")
        reply = await timestamp_data(services, body, algorithm)
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
        reply = await relay_timestamp(services, tsq)
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


HANDLERS = {"createTimestamp": create_timestamp}
