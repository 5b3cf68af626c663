"""Typed application keys: what the factory puts into the aiohttp app."""

from __future__ import annotations

from aiohttp import ClientSession, web

from ..clients import Client, ClientStore
from ..config import Settings
from ..health import HealthCheck
from ..paths import Paths
from ..runtime import DaemonRuntime
from ..sandbox.pki import SandboxPKI
from .contract import Operation

__all__ = [
    "CLIENT",
    "CLIENT_STORE",
    "HEALTH_CHECKS",
    "HTTP_SESSION",
    "IMPLEMENTED",
    "INSTANCE",
    "OPERATION",
    "PATHS",
    "SANDBOX_PKI",
    "SETTINGS",
]

SETTINGS = web.AppKey("settings", Settings)
PATHS = web.AppKey("paths", Paths)
CLIENT_STORE = web.AppKey("client_store", ClientStore)
#: The daemon's one outgoing HTTP session (TSA, OCSP/CRL, CNS), closed on shutdown.
HTTP_SESSION = web.AppKey("http_session", ClientSession)
HEALTH_CHECKS = web.AppKey("health_checks", list[tuple[str, HealthCheck]])
#: The sandbox PKI when running ``serve --sandbox`` (set before the subsystems start).
SANDBOX_PKI = web.AppKey("sandbox_pki", SandboxPKI)
#: Operation ids that have a handler; the others answer 501.
IMPLEMENTED = web.AppKey("implemented", frozenset[str])
#: This run of ``sidecar serve`` (its runtime file's content); absent in other hosts.
INSTANCE = web.AppKey("instance", DaemonRuntime)

# Request-scoped values, set by the middlewares for the handlers.
OPERATION = web.RequestKey("operation", Operation)
CLIENT = web.RequestKey("client", Client)
REQUEST_ID = web.RequestKey("request_id", str)


def request_operation(request: web.Request) -> Operation | None:
    return request.get(OPERATION)


def request_client(request: web.Request) -> Client | None:
    return request.get(CLIENT)
