"""Give the memory the daemon has freed back to the operating system.

glibc's ``malloc`` keeps freed blocks in its heap for reuse and returns pages to the
system only from the heap's top. After a burst of requests (bodies of megabytes,
parsed documents, signatures), Python frees all of it, yet the process's resident
size stays near its peak: measured on ``serve --sandbox`` under the fuzz load of
issue 15, ~5 MB per 10,000 requests that ``malloc_trim(0)`` hands back at once.

:func:`trim_periodically` calls ``malloc_trim(0)`` every so often (in a thread: it
walks the heap). Where the C library has no ``malloc_trim`` (musl, macOS, Windows)
it does nothing.

:func:`limit_arenas` caps glibc's malloc arenas (by default up to 8 per core, each
thread that allocates gets one: the default executor's, the stores' and the worker
pipes' threads). Each arena keeps its own freed, fragmented pages; measured under the
mixed load of issue 19, two arenas left the daemon ~7 MB of PSS lighter at no cost
in throughput (its threads mostly wait on I/O; the GIL serializes the rest).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import sys
from collections.abc import Callable

__all__ = ["ARENAS", "TRIM_INTERVAL", "give_back", "limit_arenas", "trim_periodically"]

log = logging.getLogger("sidecar.memory")

#: Seconds between two trims: rare enough to cost nothing, often enough to stay flat.
TRIM_INTERVAL = 60.0

#: malloc arenas the daemon's process may have unless ``MALLOC_ARENA_MAX`` says otherwise.
ARENAS = 2

#: ``mallopt``'s parameter number for the arena count (glibc's malloc.h).
_M_ARENA_MAX = -8


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap this process's malloc arenas at *arenas* (glibc), before its threads start;
    whether it was done. An operator's ``MALLOC_ARENA_MAX`` (or a ``GLIBC_TUNABLES``
    naming ``arena_max``), read by glibc at the process's start, wins: left alone."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "MALLOC_ARENA_MAX" in os.environ or "arena_max" in tunables:
        return False
    if _malloc_trim() is None:  # not glibc: no such setting
        return False
    mallopt: Callable[[int, int], int] = ctypes.CDLL(None).mallopt
    return bool(mallopt(_M_ARENA_MAX, arenas))


def give_back() -> bool:
    """Return freed heap memory to the system now; whether the C library could."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


async def trim_periodically(interval: float = TRIM_INTERVAL) -> None:
    """Run :func:`give_back` every *interval* seconds until cancelled."""
    if _malloc_trim() is None:
        log.debug("no malloc_trim in this C library: freed memory stays with the process")
        return
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        await loop.run_in_executor(None, give_back)
