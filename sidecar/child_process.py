"""The sandbox's stand-ins as child processes of the daemon: how they start, talk, end.

The sandbox's CNS simulator (:mod:`sidecar.cns.simulator_process`) and its PKI's
responders (:mod:`sidecar.sandbox.services_process`) in production run on other machines:
served from the daemon's own process they held its GIL (and, the simulator, its event
loop) for work no practice's daemon does. Each runs as ``python -m <module>``:

- the parent writes its configuration on the child's stdin (one JSON line), and may hand
  it a listening socket already bound (``fd``, POSIX), so that a taken port is reported
  by the daemon as before;
- the child answers one JSON line on stdout once it serves (``{"url": ...}`` or any
  data), or ``{"error": "..."}`` (a sentence for the daemon's error) and ends;
- the child ends when its stdin closes: the daemon closes it to stop it, and the
  operating system closes it when the daemon dies, however it dies, so no stand-in
  outlives its daemon. It ignores Ctrl-C: the daemon decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

from .errors import Misconfigured

__all__ = ["ChildStartError", "child_config", "run_child", "say", "until_parent_ends"]

log = logging.getLogger("sidecar.child_process")

#: How long a child may take to serve (a fresh interpreter on a loaded machine).
START_TIMEOUT = 60.0
#: How long a stopping child may take to close its server before it is killed.
STOP_TIMEOUT = 5.0
#: How much lower than the daemon's a stand-in's CPU priority is (a POSIX nice
#: increment, best effort). The stand-ins play other machines (the CNS, the TSA and
#: OCSP responders): in production they take no cycle from the daemon. Under the mixed
#: load of issue 19 the CNS simulator alone wanted half a core; at the daemon's
#: priority it delayed the daemon's event loop, which a practice's daemon never sees.
STAND_IN_NICENESS = 5


class ChildStartError(OSError, Misconfigured):
    """The child said why it cannot serve (``reason``), or did not start: a start-up
    failure of a sandbox stand-in (a taken port, a broken install), never a request's."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@contextlib.asynccontextmanager
async def run_child(
    module: str, config: dict[str, Any], *, pass_fds: Sequence[int] = ()
) -> AsyncIterator[tuple[dict[str, Any], int]]:
    """Run ``python -m module`` until the block exits; yields (what it said, its pid).

    Raises :class:`ChildStartError` when it answers ``{"error": ...}``, ends before
    answering, or does not answer within :data:`START_TIMEOUT`.
    """
    process = await asyncio.to_thread(_start, module, config, tuple(pass_fds))
    try:
        said = await asyncio.wait_for(asyncio.to_thread(_ready, process), START_TIMEOUT)
    except TimeoutError:
        await asyncio.to_thread(_stop, process)
        raise ChildStartError(f"{module} did not start within {START_TIMEOUT:g} s") from None
    except BaseException:
        await asyncio.to_thread(_stop, process)
        raise
    try:
        yield said, process.pid
    finally:
        await asyncio.to_thread(_stop, process)


def _start(
    module: str, config: dict[str, Any], pass_fds: tuple[int, ...]
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", module],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,  # its warnings go where the daemon's go
        close_fds=True,
        pass_fds=pass_fds,
    )
    assert process.stdin is not None  # PIPE above
    process.stdin.write(json.dumps(config).encode() + b"\n")
    process.stdin.flush()
    return process


def _ready(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Blocking: the child's first line."""
    assert process.stdout is not None  # PIPE above
    line = process.stdout.readline()
    try:
        said = json.loads(line) if line else None
    except ValueError:
        said = None
    if not isinstance(said, dict):
        raise ChildStartError(f"the process ended ({process.wait()})")
    if "error" in said:
        raise ChildStartError(str(said["error"]))
    return said


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Blocking: close its stdin (it stops), wait a little, else kill it."""
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log.warning("a sandbox process (pid %d) did not stop: killed", process.pid)
        process.kill()
        process.wait()


# -- the child's side ---------------------------------------------------------------------


def child_config() -> dict[str, Any]:
    """In the child, first: ignore Ctrl-C, yield the CPU to the daemon
    (:data:`STAND_IN_NICENESS`), and read the configuration line."""
    # Ctrl-C in a terminal reaches the whole process group: the daemon stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "nice"):
        with contextlib.suppress(OSError):  # refused (a seccomp filter): the same priority
            os.nice(STAND_IN_NICENESS)
    config: dict[str, Any] = json.loads(sys.stdin.buffer.readline())
    return config


def say(what: dict[str, Any]) -> None:
    """In the child: the one line the parent waits for."""
    sys.stdout.write(json.dumps(what) + "\n")
    sys.stdout.flush()


def until_parent_ends() -> asyncio.Event:
    """In the child, on its loop: an event set when stdin closes (the daemon stopped
    us, or ended)."""
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()
    stdin = sys.stdin.buffer

    def watch() -> None:
        with contextlib.suppress(OSError):
            while stdin.read(1 << 12):  # nothing is written after the configuration
                pass
        with contextlib.suppress(RuntimeError):  # the loop ended already
            loop.call_soon_threadsafe(ended.set)

    threading.Thread(target=watch, name="daemon-watch", daemon=True).start()
    return ended
