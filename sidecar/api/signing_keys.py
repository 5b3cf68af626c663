"""``GET /v1/keys``: the keys this client may use (key errors are answered by
:mod:`sidecar.api.problems`)."""

from __future__ import annotations

from aiohttp import web

from ..operations.key_info import describe_keys
from .appkeys import SERVICES

__all__ = ["HANDLERS", "list_keys"]


async def list_keys(request: web.Request) -> web.Response:
    return web.json_response({"keys": describe_keys(request.app[SERVICES])})


HANDLERS = {"listKeys": list_keys}
