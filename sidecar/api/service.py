"""Service routes: health, UUIDs, and the contract itself."""

from __future__ import annotations

import uuid

from aiohttp import web

from .. import __version__
from ..clients import Scope
from ..health import overall, run_checks
from .keys import CLIENT, HEALTH_CHECKS, IMPLEMENTED
from .openapi import build_openapi
from .problems import bad_parameter

__all__ = ["HANDLERS", "get_health", "get_openapi", "get_uuids"]

MAX_UUIDS = 1000


async def get_health(request: web.Request) -> web.Response:
    """Public: status and version. An admin token also sees each check."""
    results = await run_checks(request.app[HEALTH_CHECKS], per_check_seconds=5.0)
    body: dict[str, object] = {"status": overall(results), "version": __version__}
    client = request.get(CLIENT)
    if client is not None and Scope.ADMIN in client.scopes:
        body["checks"] = [r.as_json() for r in results]
    return web.json_response(body)


async def get_uuids(request: web.Request) -> web.Response:
    """``count`` RFC 4122 version-4 UUIDs (uuid4 draws from os.urandom)."""
    raw = request.query.get("count", "1")
    try:
        count = int(raw)
    except ValueError:
        raise bad_parameter("count", f"expected an integer 1-{MAX_UUIDS}, got {raw!r}") from None
    if not 1 <= count <= MAX_UUIDS:
        raise bad_parameter("count", f"must be between 1 and {MAX_UUIDS} (got {count})")
    return web.json_response({"uuids": [str(uuid.uuid4()) for _ in range(count)]})


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(build_openapi(request.app[IMPLEMENTED]))


HANDLERS = {
    "getHealth": get_health,
    "getUuids": get_uuids,
    "getOpenApi": get_openapi,
}
