"""The systemd notification protocol (``sd_notify``) without libsystemd.

``Type=notify`` units learn that the daemon is ready (``READY=1``), that it is
stopping (``STOPPING=1``) and that it is alive (``WATCHDOG=1``) from datagrams sent
to ``$NOTIFY_SOCKET``. With ``WatchdogSec=`` set, systemd passes
``WATCHDOG_USEC`` (and ``WATCHDOG_PID``) and kills and restarts a daemon that stays
silent for that long. The pings come from a task on the daemon's own event loop,
so a loop blocked by a stuck handler stops them and systemd restarts the daemon:
that is the failure the watchdog exists to catch.

Outside systemd (no ``NOTIFY_SOCKET``) every function here does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping

__all__ = ["notify", "watchdog", "watchdog_interval"]

log = logging.getLogger("sidecar.service")


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send *state* (``"READY=1"``, ``"WATCHDOG=1"``...) to the service manager.

    Returns whether a datagram was sent. Never raises: a service manager that went
    away must not take the daemon with it.
    """
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET")
    if not address or not hasattr(socket, "AF_UNIX"):
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.debug("sd_notify %s failed: %s", state, exc)
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between two watchdog pings, or None when no watchdog is asked for.

    Half the ``WATCHDOG_USEC`` timeout, as sd_watchdog_enabled(3) recommends, so one
    late ping is not fatal. ``WATCHDOG_PID``, when set, must be this process: a
    child started by the daemon must not ping on its behalf.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec or not env.get("NOTIFY_SOCKET"):
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        timeout = int(usec) / 1_000_000
    except ValueError:
        return None
    return timeout / 2 if timeout > 0 else None


@contextlib.asynccontextmanager
async def watchdog(environ: Mapping[str, str] | None = None) -> AsyncIterator[float | None]:
    """Ping ``WATCHDOG=1`` while the block runs; yields the interval (None: off)."""
    interval = watchdog_interval(environ)
    if interval is None:
        yield None
        return

    async def ping() -> None:
        while True:
            notify("WATCHDOG=1", environ)
            await asyncio.sleep(interval)

    task = asyncio.create_task(ping(), name="sidecar-watchdog")
    log.debug("systemd watchdog: pinging every %.1f s", interval)
    try:
        yield interval
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
