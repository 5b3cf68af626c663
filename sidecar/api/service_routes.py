"""Service routes: health, UUIDs, and the contract itself."""

from __future__ import annotations

import hmac
import uuid

from aiohttp import web

from .. import __version__
from ..clients import Scope
from ..health import overall, run_checks
from ..runtime import INSTANCE_KEY_HEADER
from .appkeys import CLIENT, IMPLEMENTED, INSTANCE, SERVICES
from .openapi import build_openapi
from .problems import bad_parameter

__all__ = ["HANDLERS", "get_health", "get_openapi", "get_uuids"]

MAX_UUIDS = 1000


def _own_installation(request: web.Request) -> str | None:
    """This run's instance id, when the caller sent the key of its runtime file
    (``sidecar doctor``/``status`` of the same installation; see sidecar.runtime)."""
    instance = request.app.get(INSTANCE)
    sent = request.headers.get(INSTANCE_KEY_HEADER)
    if instance is None or not sent:
        return None
    if not hmac.compare_digest(sent.encode(), instance.key.encode()):
        return None
    return instance.instance


async def get_health(request: web.Request) -> web.Response:
    """Public: status and version. An admin token also sees each check; so does the
    daemon's own installation (its runtime file's key), which also sees the instance."""
    checks = request.app[SERVICES].health_checks
    results = await run_checks(checks, per_check_seconds=5.0)
    body: dict[str, object] = {"status": overall(results), "version": __version__}
    client = request.get(CLIENT)
    instance = _own_installation(request)
    if instance is not None:
        body["instance"] = instance
    if instance is not None or (client is not None and Scope.ADMIN in client.scopes):
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
    implemented = request.app[IMPLEMENTED]
    return web.json_response(build_openapi(implemented))


HANDLERS = {
    "getHealth": get_health,
    "getUuids": get_uuids,
    "getOpenApi": get_openapi,
}
