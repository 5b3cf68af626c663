"""Serve the sandbox PKI's TSA, OCSP, CRL and certificate endpoints over loopback HTTP.

The services run in a child process (:mod:`sidecar.sandbox.services_process`; where
a socket cannot be handed to one, i.e. Windows, in a thread of the caller's process on
an event loop of its own), through certomancer's aiohttp animator, so that the
responders' signing holds neither the daemon's loop nor its GIL. Routes, relative to
:attr:`SandboxPKI.base_url`::

    POST /sandbox/tsa/tsa                         RFC 3161 (application/timestamp-query)
    POST /sandbox/ocsp/{root,intermediate}        RFC 6960, POST only
    GET  /sandbox/crls/{root,intermediate}/latest.crl
    GET  /sandbox/certs/{root,intermediate}/ca.crt   (the caIssuers URLs)
    GET  /sandbox/lists/{eu-lotl,lu}.xml          its trusted lists (sidecar.sandbox.lists)

Certomancer's handlers run synchronously (a TSA reply took ~11 ms of CPU, most of it
asn1crypto encoding again the certificates it embeds; ~2.5 ms once they are served
parsed from their DER, :func:`_certificates_from_der`), holding the GIL of the process
they run in: hence the child process (~40 MB of memory, a sandbox's only: production's
responders are other machines'; ``bench/bench_mixed.py`` reports it apart).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import os
import socket
import threading
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from asn1crypto import pem as asn1_pem
from asn1crypto import x509 as asn1_x509
from certomancer.integrations.aiohttp_animator import build_animator_app
from certomancer.registry import ArchLabel, CertLabel, PKIArchitecture

from sidecar.child_process import ChildStartError, run_child
from sidecar.i18n import _
from sidecar.ports import bind, bind_error
from sidecar.sandbox.pki import ARCH_LABEL, SandboxError, SandboxPKI, load_certomancer_config

__all__ = ["serve_sandbox_pki"]

logger = logging.getLogger(__name__)


@asynccontextmanager
async def serve_sandbox_pki(pki: SandboxPKI) -> AsyncIterator[SandboxPKI]:
    """Serve ``pki`` on ``pki.host:pki.port`` from a child process (POSIX; a thread of
    this process elsewhere) until the block exits.

    Yields ``pki`` back once the socket listens. Raises :class:`SandboxError` if the
    PKI cannot be loaded or the port cannot be bound.
    """
    # Bind first: a busy port is the likeliest failure and needs no certificate rebuild.
    # (_bind may ask the port's holder who it is: a second at most, only on a clash.)
    sock = await asyncio.to_thread(_bind, pki)
    try:
        # The lists are files (rewritten by tests): written here, served by either.
        from sidecar.sandbox.lists import ensure_sandbox_lists

        await asyncio.to_thread(ensure_sandbox_lists, pki)
        if os.name == "posix":
            async with _in_child(pki, sock):
                logger.info("sandbox PKI services listening on %s (child process)", pki.base_url)
                yield pki
            return
        # No socket to hand over to a child (Windows): a thread of this process.
        # Rebuilding the certificates signs with RSA: keep that off the event loop.
        app = await asyncio.to_thread(build_app, pki)
        server = _ServerThread(app, sock, pki)
        await asyncio.to_thread(server.start)
        try:
            logger.info("sandbox PKI services listening on %s", pki.base_url)
            yield pki
        finally:
            await asyncio.to_thread(server.stop)
    finally:
        sock.close()


@asynccontextmanager
async def _in_child(pki: SandboxPKI, sock: socket.socket) -> AsyncIterator[None]:
    """Serve from a child process (:mod:`sidecar.sandbox.services_process`) on *sock*."""
    sock.listen(128)  # connections wait in the backlog until the child answers them
    config = {
        "directory": str(pki.directory),
        "host": pki.host,
        "fd": sock.fileno(),
        "log_level": logger.getEffectiveLevel(),
    }
    try:
        async with run_child("sidecar.sandbox.services_process", config, pass_fds=(sock.fileno(),)):
            # The child's copy listens; ours would keep the port open if the child died.
            sock.close()
            yield
    except ChildStartError as exc:
        raise SandboxError(exc.reason) from None


def build_app(pki: SandboxPKI) -> web.Application:
    """Blocking: the responders' application (certomancer's, with the lists' routes)."""
    arch = load_certomancer_config(pki)
    _certificates_from_der(arch)
    app = build_animator_app(
        {ArchLabel(ARCH_LABEL): arch},
        # No web UI: it offers every private key as a PKCS#12 download.
        with_web_ui=False,
        # Tests (and curious vendors) may ask for a response "as of" another time
        # through certomancer's fake-time header; harmless on a sandbox.
        allow_time_override=True,
    )
    # The sandbox's own trusted lists (sidecar.sandbox.lists), beside TSA/OCSP/CRL.
    from sidecar.sandbox.lists import add_list_routes

    add_list_routes(app, pki)
    return app


def _certificates_from_der(arch: PKIArchitecture) -> None:
    """Serve ``arch``'s certificates parsed back from their DER: same bytes, cheaper replies.

    certomancer's certificates are the objects it built; each reply that embeds one (a
    timestamp token embeds the TSA's, an OCSP reply its responder's) makes asn1crypto
    encode the whole certificate again, ~8 of a TSA reply's ~11 ms of CPU. Parsed from
    bytes, a certificate keeps them and re-encodes nothing. ``get_cert`` is public; the
    responders find certificates through it.
    """
    built = arch.get_cert
    parsed: dict[CertLabel, asn1_x509.Certificate] = {}

    def get_cert(label: CertLabel) -> asn1_x509.Certificate:
        cert = parsed.get(label)
        if cert is None:
            cert = parsed[label] = asn1_x509.Certificate.load(built(label).dump())
        return cert

    setattr(arch, "get_cert", get_cert)  # noqa: B010 - an instance's, not the class's


class _ServerThread:
    """The sandbox PKI's aiohttp server on an event loop of its own, in a thread.

    Certomancer's handlers sign synchronously (tens of milliseconds each): on the
    daemon's loop they would hold every request meanwhile, which production's remote
    TSA and OCSP responders never do. In a thread they hold only the GIL, in short
    slices, so the sandbox's latencies look like production's.
    """

    def __init__(self, app: web.Application, sock: socket.socket, pki: SandboxPKI) -> None:
        self._app = app
        self._sock = sock
        self._pki = pki
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app)
        self._thread = threading.Thread(target=self._run, name="sandbox-pki", daemon=True)
        self._started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._stopped: asyncio.Event | None = None

    def start(self) -> None:
        """Blocking: start the thread and return once the socket listens (or raise)."""
        self._thread.start()
        self._started.result()

    def stop(self) -> None:
        """Blocking: clean the server up and end the thread."""
        if self._stopped is not None:
            with contextlib.suppress(RuntimeError):  # the loop ended already
                self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join()

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        try:
            await self._runner.setup()
            try:
                await web.SockSite(self._runner, self._sock).start()  # listens
            except OSError as exc:  # a sandbox started meanwhile listened first
                raise SandboxError(_cannot_serve(self._pki, bind_error(exc))) from None
        except BaseException as exc:
            self._started.set_exception(exc)
            await self._runner.cleanup()
            return
        self._started.set_result(None)
        try:
            await self._stopped.wait()
        finally:
            await self._runner.cleanup()


def _bind(pki: SandboxPKI) -> socket.socket:
    try:
        return bind(pki.host, pki.port)
    except OSError as exc:
        reason = bind_error(exc)
        if exc.errno != errno.EADDRINUSE:
            raise SandboxError(_cannot_serve(pki, reason)) from None
    if _serves_this_sandbox(pki):
        what_to_do = _(
            "another sidecar already serves this same sandbox (same SIDECAR_HOME): "
            "use that one, or stop it first"
        )
    else:
        # The certificates name this port: only a new sandbox can move elsewhere.
        what_to_do = _(
            "another program holds it; stop that program, or delete "
            "{directory} and start again to regenerate the sandbox on free ports",
            directory=pki.directory,
        )
    raise SandboxError(f"{_cannot_serve(pki, reason)}: {what_to_do}")


def _cannot_serve(pki: SandboxPKI, reason: str) -> str:
    return _(
        "cannot serve the sandbox PKI on {host}:{port}: {reason}",
        host=pki.host,
        port=pki.port,
        reason=reason,
    )


def _serves_this_sandbox(pki: SandboxPKI) -> bool:
    """Whether what holds the PKI's port publishes this sandbox's root certificate."""
    url = f"{pki.base_url}/{ARCH_LABEL}/certs/root/ca.crt"
    try:
        # An http:// URL we built from sandbox.json, never a caller's.
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310
            served = response.read(1 << 16)
        _, _, ours = asn1_pem.unarmor(pki.roots_pem.read_bytes())
        if asn1_pem.detect(served):
            _, _, served = asn1_pem.unarmor(served)
    except (OSError, ValueError):
        return False
    return bool(served == ours)
