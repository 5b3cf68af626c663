"""The application factory: settings in, a ready aiohttp application out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from aiohttp import web

from ..clients import ClientStore
from ..config import Settings
from ..memory import trim_periodically
from ..operations import open_services
from ..paths import Paths
from ..sandbox.pki import SandboxPKI
from . import (
    batches,
    cns,
    docs,
    form_routes,
    observe,
    pdf,
    service_routes,
    signing_keys,
    timestamps,
)
from . import verify as verify_api
from . import xml as xml_api
from .appkeys import (
    CLIENT_STORE,
    IMPLEMENTED,
    PATHS,
    SANDBOX_PKI,
    SERVICES,
    SETTINGS,
)
from .contract import CONTRACT
from .guards import Handler, middlewares, not_implemented, route_operations
from .protocol import install_protocol

__all__ = ["HANDLERS", "SANDBOX_DIR", "create_app"]

log = logging.getLogger("sidecar.app")

#: Operation id → handler, merged from each resource module's ``HANDLERS``.
#: A contract route missing here answers 501.
HANDLERS: Mapping[str, Handler] = {
    **service_routes.HANDLERS,
    **signing_keys.HANDLERS,
    **timestamps.HANDLERS,
    **pdf.HANDLERS,
    **form_routes.HANDLERS,
    **xml_api.HANDLERS,
    **batches.HANDLERS,
    **verify_api.HANDLERS,
    **cns.HANDLERS,
    **observe.HANDLERS,
}

#: Where ``serve --sandbox`` generates its PKI; absent when not in sandbox mode.
SANDBOX_DIR = web.AppKey("sandbox_dir", Path)


async def _services(app: web.Application) -> AsyncIterator[None]:
    """Every service of the daemon, built once (sidecar.operations.open_services)."""
    async with open_services(
        app[SETTINGS],
        app[PATHS],
        sandbox_pki=app.get(SANDBOX_PKI),
        sandbox_dir=app.get(SANDBOX_DIR),
        cns=True,
    ) as services:
        app[SERVICES] = services
        yield


async def _give_back_memory(_app: web.Application) -> AsyncIterator[None]:
    # Freed memory goes back to the system now and then: RSS stays flat under load.
    task = asyncio.create_task(trim_periodically())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _begin_shutdown(app: web.Application) -> None:
    services = app.get(SERVICES)
    if services is not None:  # still open while the services start
        services.begin_shutdown()


def create_app(
    settings: Settings,
    paths: Paths,
    *,
    sandbox_dir: Path | None = None,
    sandbox_pki: SandboxPKI | None = None,
    client_store: ClientStore | None = None,
) -> web.Application:
    """Build the daemon's application. Nothing is started until it runs.

    *sandbox_dir* makes the app generate and serve the sandbox PKI itself
    (``serve --sandbox``); *sandbox_pki* hands it one that is already served (the
    test suite's session-wide sandbox).
    """
    limits = settings.limits
    app = web.Application(
        middlewares=middlewares(),
        # aiohttp's own ceiling; each route's lower limit is enforced by the guards.
        client_max_size=max(
            limits.json, limits.xml, limits.pdf, limits.form, limits.timestamp, limits.batch
        ),
    )
    install_protocol(
        app,
        header_timeout=settings.server.header_timeout,
        keepalive_timeout=settings.server.keepalive_timeout,
    )
    app[SETTINGS] = settings
    app[PATHS] = paths
    app[CLIENT_STORE] = client_store or ClientStore(paths.clients_file)
    app[IMPLEMENTED] = frozenset(HANDLERS)
    operations = {}
    for op in CONTRACT:
        handler = HANDLERS.get(op.operation_id) or not_implemented(op)
        route = app.router.add_route(op.method, op.path, handler)
        operations[route] = op
    app[route_operations] = operations
    docs.add_routes(app)  # /, /docs and their assets: outside the contract
    app.cleanup_ctx.append(_give_back_memory)
    if sandbox_pki is not None:
        app[SANDBOX_PKI] = sandbox_pki
    elif sandbox_dir is not None:
        app[SANDBOX_DIR] = sandbox_dir
    app.cleanup_ctx.append(_services)
    app.on_shutdown.append(_begin_shutdown)
    observe.install(app)  # after the services: the loop-lag ticker counts into them
    return app
