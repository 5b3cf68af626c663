"""The application factory: settings in, a ready aiohttp application out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

import aiohttp
from aiohttp import web

from .. import __version__
from ..clients import ClientStore
from ..config import Settings
from ..health import CheckResult
from ..memory import trim_periodically
from ..paths import Paths
from ..sandbox.pki import SandboxPKI, ensure_sandbox_pki
from ..sandbox.services import serve_sandbox_pki
from . import batches, cns, docs, forms, observe, pdf, service, signing_keys, timestamps
from . import verify as verify_api
from . import xml as xml_api
from .contract import CONTRACT
from .guards import Handler, middlewares, not_implemented, route_operations
from .keys import (
    CLIENT_STORE,
    HEALTH_CHECKS,
    HTTP_SESSION,
    IMPLEMENTED,
    PATHS,
    SANDBOX_PKI,
    SETTINGS,
)
from .protocol import install_protocol

__all__ = ["HANDLERS", "SANDBOX_DIR", "SUBSYSTEMS", "create_app"]

log = logging.getLogger("sidecar.app")

#: Operation id → handler, merged from each resource module's ``HANDLERS``.
#: A contract route missing here answers 501.
HANDLERS: Mapping[str, Handler] = {
    **service.HANDLERS,
    **signing_keys.HANDLERS,
    **timestamps.HANDLERS,
    **pdf.HANDLERS,
    **forms.HANDLERS,
    **xml_api.HANDLERS,
    **batches.HANDLERS,
    **verify_api.HANDLERS,
    **cns.HANDLERS,
    **observe.HANDLERS,
}

#: Where ``serve --sandbox`` generates its PKI; absent when not in sandbox mode.
SANDBOX_DIR = web.AppKey("sandbox_dir", Path)


#: Cleanup contexts of the subsystems (keys, trust, CNS outbox...), in dependency
#: order, run after the HTTP session and the sandbox are up.
SUBSYSTEMS: list[Callable[[web.Application], AsyncIterator[None]]] = [
    signing_keys.keys_context,
    timestamps.trust_context,
    pdf.signing_context,
    xml_api.xml_context,
    batches.batches_context,
    cns.fee_note_context,  # the deposit's signing seams, before cns_context reads them
    cns.cns_context,
]


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    # One session for every upstream (TSA, OCSP/CRL, CNS): connection reuse matters
    # when a burst of signatures each needs a timestamp.
    timeout = aiohttp.ClientTimeout(total=30, connect=5)
    async with aiohttp.ClientSession(
        timeout=timeout, headers={"User-Agent": f"sidecar/{__version__}"}
    ) as session:
        app[HTTP_SESSION] = session
        yield


async def _give_back_memory(_app: web.Application) -> AsyncIterator[None]:
    # Freed memory goes back to the system now and then: RSS stays flat under load.
    task = asyncio.create_task(trim_periodically())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _sandbox(app: web.Application) -> AsyncIterator[None]:

    settings = app[SETTINGS].sandbox
    loop = asyncio.get_running_loop()
    # Key generation takes a moment on first start; keep the loop free meanwhile.
    pki = await loop.run_in_executor(
        None,
        lambda: ensure_sandbox_pki(
            app[SANDBOX_DIR], host=settings.host, port=settings.port, cns_port=settings.cns_port
        ),
    )
    async with serve_sandbox_pki(pki):
        # Subsystems set up after this one take their sandbox defaults from it.
        app[SANDBOX_PKI] = pki
        log.info("sandbox PKI served at %s; trust anchors in %s", pki.base_url, pki.roots_pem)

        async def check() -> CheckResult:
            url = next(iter(pki.crl_urls.values()))
            async with app[HTTP_SESSION].get(url) as response:
                ok = response.status == 200
            return CheckResult(
                "sandbox-pki",
                "ok" if ok else "degraded",
                f"TSA/OCSP/CRL at {pki.base_url}" if ok else f"CRL answered {response.status}",
            )

        app[HEALTH_CHECKS].append(("sandbox-pki", check))
        yield


def create_app(
    settings: Settings,
    paths: Paths,
    *,
    sandbox_dir: Path | None = None,
    sandbox_pki: SandboxPKI | None = None,
    client_store: ClientStore | None = None,
    subsystems: Sequence[Callable[[web.Application], AsyncIterator[None]]] | None = None,
) -> web.Application:
    """Build the daemon's application. Nothing is started until it runs.

    *sandbox_dir* makes the app generate and serve the sandbox PKI itself
    (``serve --sandbox``); *sandbox_pki* hands it one that is already served (the
    test suite's session-wide sandbox). *subsystems* narrows :data:`SUBSYSTEMS` for
    a command that needs only some (``sidecar sign`` has no use for the CNS outbox).
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
    app[HEALTH_CHECKS] = []
    app[IMPLEMENTED] = frozenset(HANDLERS)
    operations = {}
    for op in CONTRACT:
        handler = HANDLERS.get(op.operation_id) or not_implemented(op)
        route = app.router.add_route(op.method, op.path, handler)
        operations[route] = op
    app[route_operations] = operations
    observe.install(app)  # app[METRICS], before the subsystems that report to it
    docs.add_routes(app)  # /, /docs and their assets: outside the contract
    app.cleanup_ctx.append(_http_session)
    app.cleanup_ctx.append(_give_back_memory)
    if sandbox_pki is not None:
        app[SANDBOX_PKI] = sandbox_pki
    elif sandbox_dir is not None:
        app[SANDBOX_DIR] = sandbox_dir
        app.cleanup_ctx.append(_sandbox)
    # In dependency order: each may use what the ones before it put into the app.
    app.cleanup_ctx.extend(SUBSYSTEMS if subsystems is None else subsystems)
    return app
