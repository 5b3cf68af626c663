"""The application factory: settings in, a ready aiohttp application out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
from aiohttp import web

from .. import __version__
from ..clients import ClientStore
from ..config import Settings
from ..health import CheckResult
from ..paths import Paths
from . import service
from .contract import CONTRACT
from .guards import Handler, middlewares, not_implemented, route_operations
from .keys import (
    CLIENT_STORE,
    HEALTH_CHECKS,
    HTTP_SESSION,
    IMPLEMENTED,
    PATHS,
    SETTINGS,
)

__all__ = ["SANDBOX", "create_app"]

log = logging.getLogger("sidecar.app")

#: Operation id → handler. A contract route missing here answers 501.
HANDLERS: Mapping[str, Handler] = {
    "getHealth": service.get_health,
    "getUuids": service.get_uuids,
    "getOpenApi": service.get_openapi,
}

#: Where ``serve --sandbox`` generates its PKI; ``None`` when not in sandbox mode.
SANDBOX = web.AppKey("sandbox_dir", Path)


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    # One session for every upstream (TSA, OCSP/CRL, CNS): connection reuse matters
    # when a burst of signatures each needs a timestamp.
    timeout = aiohttp.ClientTimeout(total=30, connect=5)
    async with aiohttp.ClientSession(
        timeout=timeout, headers={"User-Agent": f"sidecar/{__version__}"}
    ) as session:
        app[HTTP_SESSION] = session
        yield


async def _sandbox(app: web.Application) -> AsyncIterator[None]:
    from ..sandbox.pki import ensure_sandbox_pki
    from ..sandbox.services import serve_sandbox_pki

    settings = app[SETTINGS].sandbox
    loop = asyncio.get_running_loop()
    # Key generation takes a moment on first start; keep the loop free meanwhile.
    pki = await loop.run_in_executor(
        None, lambda: ensure_sandbox_pki(app[SANDBOX], host=settings.host, port=settings.port)
    )
    async with serve_sandbox_pki(pki):
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
    client_store: ClientStore | None = None,
) -> web.Application:
    """Build the daemon's application. Nothing is started until it runs."""
    limits = settings.limits
    app = web.Application(
        middlewares=middlewares(),
        # aiohttp's own ceiling; each route's lower limit is enforced by the guards.
        client_max_size=max(limits.json, limits.xml, limits.pdf, limits.form, limits.timestamp),
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
    app.cleanup_ctx.append(_http_session)
    if sandbox_dir is not None:
        app[SANDBOX] = sandbox_dir
        app.cleanup_ctx.append(_sandbox)
    return app
