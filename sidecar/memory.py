"""Give the memory the daemon has freed back to the operating system.

glibc's ``malloc`` keeps freed blocks in its heap for reuse and returns pages to the
system only from the heap's top. After a burst of requests (bodies of megabytes,
parsed documents, signatures), Python frees all of it, yet the process's resident
size stays near its peak: measured on ``serve --sandbox`` under the fuzz load of
issue 15, ~5 MB per 10,000 requests that ``malloc_trim(0)`` hands back at once.

:func:`trim_periodically` calls ``malloc_trim(0)`` every so often (in a thread: it
walks the heap). Where the C library has no ``malloc_trim`` (musl, macOS, Windows)
it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import sys
from collections.abc import Callable

__all__ = ["TRIM_INTERVAL", "give_back", "trim_periodically"]

log = logging.getLogger("sidecar.memory")

#: Seconds between two trims: rare enough to cost nothing, often enough to stay flat.
TRIM_INTERVAL = 60.0


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


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
