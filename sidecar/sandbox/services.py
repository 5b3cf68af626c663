"""Serve the sandbox PKI's TSA, OCSP, CRL and certificate endpoints over loopback HTTP.

The services run in the caller's event loop (the daemon's, or the test session's) through
certomancer's aiohttp animator, so ``sidecar serve --sandbox`` stays one process. Routes,
relative to :attr:`SandboxPKI.base_url`::

    POST /sandbox/tsa/tsa                         RFC 3161 (application/timestamp-query)
    POST /sandbox/ocsp/{root,intermediate}        RFC 6960, POST only
    GET  /sandbox/crls/{root,intermediate}/latest.crl
    GET  /sandbox/certs/{root,intermediate}/ca.crt   (the caIssuers URLs)
    GET  /sandbox/lists/{eu-lotl,lu}.xml          its trusted lists (sidecar.sandbox.lists)

Certomancer's handlers sign synchronously (tens of milliseconds each, it reparses the
RSA key every time); acceptable for a sandbox, but it does block the loop meanwhile.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from certomancer.integrations.aiohttp_animator import build_animator_app
from certomancer.registry import ArchLabel

from sidecar.sandbox.pki import ARCH_LABEL, SandboxError, SandboxPKI, load_certomancer_config

__all__ = ["serve_sandbox_pki"]

logger = logging.getLogger(__name__)


@asynccontextmanager
async def serve_sandbox_pki(pki: SandboxPKI) -> AsyncIterator[SandboxPKI]:
    """Serve ``pki`` on ``pki.host:pki.port`` in the running loop until the block exits.

    Yields ``pki`` back once the socket listens. Raises :class:`SandboxError` if the
    PKI cannot be loaded or the port cannot be bound.
    """
    # Bind first: a busy port is the likeliest failure and needs no certificate rebuild.
    sock = _bind(pki)
    try:
        # Rebuilding the certificates signs with RSA: keep that off the event loop.
        arch = await asyncio.to_thread(load_certomancer_config, pki)
    except BaseException:
        sock.close()
        raise
    app = build_animator_app(
        {ArchLabel(ARCH_LABEL): arch},
        # No web UI: it offers every private key as a PKCS#12 download.
        with_web_ui=False,
        # Tests (and curious vendors) may ask for a response "as of" another time
        # through certomancer's fake-time header; harmless on a sandbox.
        allow_time_override=True,
    )
    # The sandbox's own trusted lists (sidecar.sandbox.lists), beside TSA/OCSP/CRL.
    from sidecar.sandbox.lists import add_list_routes, ensure_sandbox_lists

    await asyncio.to_thread(ensure_sandbox_lists, pki)
    add_list_routes(app, pki)
    runner = web.AppRunner(app)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
        logger.info("sandbox PKI services listening on %s", pki.base_url)
        yield pki
    finally:
        await runner.cleanup()
        sock.close()


def _bind(pki: SandboxPKI) -> socket.socket:
    try:
        return socket.create_server(
            (pki.host, pki.port), family=socket.AF_INET6 if ":" in pki.host else socket.AF_INET
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            reason = "the port is already in use (another sidecar sandbox running?)"
        else:
            reason = exc.strerror or str(exc)
        raise SandboxError(
            f"cannot serve the sandbox PKI on {pki.host}:{pki.port}: {reason}. "
            f"Its certificates point at {pki.base_url}, so this exact address is "
            f"needed; free it or delete {pki.directory} to regenerate with another port"
        ) from exc
