"""Typed application keys: what the factory puts into the aiohttp app."""

from __future__ import annotations

from aiohttp import web

from ..clients import Client, ClientStore
from ..config import Settings
from ..operations import Services
from ..paths import Paths
from ..runtime import DaemonRuntime
from ..sandbox.pki import SandboxPKI
from .contract import Operation

__all__ = [
    "CLIENT",
    "CLIENT_STORE",
    "IMPLEMENTED",
    "INSTANCE",
    "OPERATION",
    "PATHS",
    "SANDBOX_PKI",
    "SERVICES",
    "SETTINGS",
]

SETTINGS = web.AppKey("settings", Settings)
PATHS = web.AppKey("paths", Paths)
CLIENT_STORE = web.AppKey("client_store", ClientStore)
#: Every service of the daemon (sidecar.operations.open_services), set at start.
SERVICES = web.AppKey("services", Services)

#: A sandbox already served, handed to the factory (the test suite's): the services
#: trust it and use its TSA.
SANDBOX_PKI = web.AppKey("sandbox_pki", SandboxPKI)
# Transitional (#14): the CNS subsystem (``sidecar.cns.subsystem.cns_context``) still
# reads these two (and SANDBOX_PKI); ``sidecar.api.app`` sets them from
# :data:`SERVICES`; they go when the CNS is opened by ``open_services`` itself.
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
