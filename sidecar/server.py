"""``sidecar serve``: bind, run in the foreground, stop gracefully on a signal."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from . import __version__
from .api.app import create_app
from .api.appkeys import INSTANCE
from .clients import ClientStore, ensure_default_client
from .config import ConfigError, ServerSettings, Settings
from .errors import Misconfigured
from .i18n import _
from .memory import limit_arenas
from .paths import HomeNotWritable, Paths
from .ports import bind, bind_error
from .runtime import new_runtime, remove_runtime, write_runtime
from .sandbox.pki import SandboxError
from .service.notify import notify, watchdog

__all__ = ["StartupError", "check_binding", "run", "serve", "validate_for_serve"]

log = logging.getLogger("sidecar.server")

#: The GIL's switch interval in the daemon's process (CPython's default: 5 ms). A thread
#: that wants the GIL waits for its holder to drop it, and a holder busy in Python code
#: drops it only when asked, after this long: the event loop, woken by a request or by a
#: worker's reply, waited up to 5 ms behind one of the daemon's other threads (the
#: default executor's, the worker pool's pumps). At 1 ms the loop's wake-up waits at most
#: 1 ms; the extra hand-overs cost no measurable CPU (three CPU-bound threads: the same
#: work per CPU second at 5, 1 and 0.5 ms, within the noise of a few %).
SWITCH_INTERVAL = 0.001


class StartupError(Misconfigured):
    """The daemon cannot start; the message says why and what to do."""


def check_binding(server: ServerSettings, source: object = None) -> ssl.SSLContext | None:
    """Refuse a non-loopback address unless the configuration asks for it, with TLS."""
    file = Path(source) if isinstance(source, os.PathLike) else None
    tls = server.tls_cert is not None or server.tls_key is not None
    if tls and (server.tls_cert is None or server.tls_key is None):
        raise ConfigError(file, "server.tls_cert", "tls_cert and tls_key go together")
    if not server.is_loopback:
        if not server.allow_remote:
            raise ConfigError(
                file,
                "server.host",
                f"{server.host} is not a loopback address; a shared deployment needs "
                "allow_remote = true and TLS (tls_cert, tls_key)",
            )
        if not tls:
            raise ConfigError(
                file, "server.allow_remote", "binding a non-loopback address needs TLS"
            )
    if server.client_cert_required and server.client_ca is None:
        raise ConfigError(file, "server.client_cert_required", "needs client_ca")
    if not tls:
        if server.client_ca is not None:
            raise ConfigError(file, "server.client_ca", "client certificates need TLS")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(server.tls_cert), str(server.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            file, "server.tls_cert", f"cannot load the TLS certificate/key: {exc}"
        ) from None
    if server.client_ca is not None:
        # mTLS: a certificate, when sent, must chain to client_ca (the handshake
        # fails otherwise); which client it is, the clients file says.
        try:
            context.load_verify_locations(cafile=str(server.client_ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                file, "server.client_ca", f"cannot load the client CA certificate(s): {exc}"
            ) from None
        context.verify_mode = (
            ssl.CERT_REQUIRED if server.client_cert_required else ssl.CERT_OPTIONAL
        )
    return context


def validate_for_serve(settings: Settings) -> ssl.SSLContext | None:
    """Everything ``serve`` checks in the configuration before it starts anything;
    ``sidecar config check`` and ``doctor`` run exactly this. Raises ConfigError;
    returns the TLS context to listen with, if any."""
    from .operations.signing import xades_options

    context = check_binding(settings.server, settings.source)
    try:
        xades_options(settings.signing)
    except ValueError as exc:
        raise ConfigError(settings.source, "signing", str(exc)) from None
    return context


async def _serve(
    settings: Settings,
    paths: Paths,
    sandbox: bool,
    stop: asyncio.Event | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    server = settings.server
    ssl_context = validate_for_serve(settings)
    store = ClientStore(paths.clients_file)
    if ensure_default_client(store, paths.default_token_file):
        log.info("first start: client 'default' created, token in %s", paths.default_token_file)
    app = create_app(
        settings, paths, sandbox_dir=paths.sandbox_dir if sandbox else None, client_store=store
    )
    # Bind before starting anything: a taken port is said at once, in one line.
    try:
        sock = bind(server.host, server.port)
    except OSError as exc:
        raise _taken(server, exc) from None
    app[INSTANCE] = new_runtime(
        host=server.host,
        port=server.port,
        tls=ssl_context is not None,
        sandbox=sandbox,
        version=__version__,
    )
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=server.shutdown_timeout
    )
    try:
        await runner.setup()
    except BaseException:
        # Unwind the subsystems that did start, in reverse order, while the loop
        # runs; left to asyncio.run's shutdown, their generators are closed all at
        # once and collide ("athrow(): asynchronous generator is already running").
        try:
            await runner.cleanup()
        except Exception as exc:  # the start's own error is the one to report
            log.warning("while undoing a failed start: %s", exc)
        sock.close()
        raise
    if stop is None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
    try:
        site = web.SockSite(runner, sock, ssl_context=ssl_context)
        try:
            await site.start()  # listens: a daemon started meanwhile may have got there
        except OSError as exc:
            raise _taken(server, exc) from None
        scheme = "https" if ssl_context else "http"
        host = f"[{server.host}]" if ":" in server.host else server.host
        log.info("sidecar %s listening on %s://%s:%d", __version__, scheme, host, server.port)
        write_runtime(paths, app[INSTANCE])
        notify("READY=1")
        if ready is not None:
            ready()
        async with watchdog():  # WATCHDOG=1 pings while the loop runs (WatchdogSec=)
            await stop.wait()
        log.info("stopping: finishing requests under way")
        notify("STOPPING=1")
    finally:
        remove_runtime(paths, app[INSTANCE])
        await runner.cleanup()
        sock.close()
    log.info("stopped")


def _taken(server: ServerSettings, exc: OSError) -> StartupError:
    return StartupError(
        _(
            "cannot listen on {host}:{port}: {reason} (another sidecar running? stop it, "
            "or choose another port with --port or [server] port)",
            host=server.host,
            port=server.port,
            reason=bind_error(exc),
        )
    )


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: no loop signal handlers
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))


def _ensure_home(paths: Paths) -> None:
    try:
        paths.ensure_writable()
    except HomeNotWritable as exc:
        if _disk_takes_no_writes(exc.directory):
            # A full or read-only file system is not a wrong user: the daemon comes up
            # degraded (reads work, writes answer 503 storage_unavailable) and recovers
            # when the disk takes writes again (sidecar.storage).
            log.warning("%s; starting degraded", exc)
            return
        raise StartupError(str(exc)) from None


def _disk_takes_no_writes(directory: Path) -> bool:
    """Whether *directory* exists on a file system mounted read-only or with no room."""
    try:
        found = os.statvfs(directory)
    except OSError:  # missing, or not even readable: the user's problem, not the disk's
        return False
    return bool(found.f_flag & os.ST_RDONLY) or found.f_bavail == 0


async def serve(
    settings: Settings,
    paths: Paths,
    *,
    sandbox: bool,
    stop: asyncio.Event,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve until *stop* is set, calling *ready* once listening.

    For a host without signals (the Windows service). Raises
    :class:`~sidecar.config.ConfigError`, :class:`StartupError` and
    :class:`~sidecar.sandbox.SandboxError`.
    """
    sys.setswitchinterval(SWITCH_INTERVAL)  # the loop first: see SWITCH_INTERVAL
    _ensure_home(paths)
    await _serve(settings, paths, sandbox, stop, ready)


def run(settings: Settings, paths: Paths, *, sandbox: bool) -> int:
    """Serve until SIGTERM/SIGINT; the process's exit status."""
    limit_arenas()  # before the first thread: each would get an arena of its own
    sys.setswitchinterval(SWITCH_INTERVAL)  # the loop first: see SWITCH_INTERVAL
    try:
        _ensure_home(paths)
        asyncio.run(_serve(settings, paths, sandbox))
    except ConfigError as exc:
        # Word for word what `sidecar config check` says of the same file.
        print(_("sidecar: configuration refused: {error}", error=exc), file=sys.stderr)
        return 2
    except (StartupError, SandboxError) as exc:
        print(f"sidecar: {exc}", file=sys.stderr)
        return 1
    return 0
