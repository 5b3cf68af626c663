"""Listening sockets: bind one up front, take a free one, say plainly when one is taken.

The daemon and its sandbox bind their sockets before anything slow starts, so that a
port another program holds is reported at once, in one line, instead of as a
traceback after seconds of start-up.
"""

from __future__ import annotations

import errno
import os
import socket

from .i18n import _

__all__ = ["bind", "bind_error", "free_port"]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to *host*:*port*, not listening yet. Raises :class:`OSError`.

    Bound, the port is ours (another bind fails) while connections are still refused;
    the server listens on it once it is ready to answer (aiohttp's ``SockSite``).
    """
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        if os.name == "posix":
            # A port in TIME_WAIT after our own restart is not "taken"; a listening
            # one still is. (On Windows the option would let two servers share it.)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def free_port(host: str = "127.0.0.1", *, avoid: tuple[int, ...] = ()) -> int:
    """A port nothing is bound to on *host* right now (the kernel's pick), not in *avoid*."""
    while True:
        with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in avoid:
            return port


def bind_error(exc: OSError) -> str:
    """Why a bind failed, in words: "the port is taken" or the system's reason."""
    if exc.errno == errno.EADDRINUSE:
        return _("the port is taken")
    if exc.errno == errno.EADDRNOTAVAIL:
        return _("no such address on this machine")
    if exc.errno == errno.EACCES:
        return _("permission denied (a port below 1024 needs privileges)")
    return exc.strerror or str(exc)
