"""Worker processes for the engines' CPU-bound, self-contained steps.

A step goes to a worker process when it needs nothing but its arguments: no key, no
socket, no shared state — parsing a caller's PDF under a memory ceiling, drafting an
XAdES signature. Arguments and results cross the process boundary by pickling, so
they are plain values (bytes, frozen dataclasses); exceptions raised in a worker are
re-raised in the daemon and must pickle too.

Two reasons to use a process rather than a thread: a ceiling on what a hostile input
may cost (a worker can be killed, a thread cannot), and throughput — the event loop's
process keeps its GIL for the HTTP, TSA and revocation work while the workers use the
other cores.

Workers are started by a forkserver (spawn where there is none, i.e. Windows): they
inherit none of the daemon's threads, sessions or keys. The forkserver is shared by
every pool, so it preloads every module a worker runs (:data:`PRELOAD`) once. Nor do
they run the daemon's main script again, as multiprocessing otherwise would (under
the name ``__mp_main__``, harmless only behind an ``if __name__ == "__main__"``
guard, which a vendor's launcher script may lack): workers only run engine functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import select
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

__all__ = ["PRELOAD", "WorkerLost", "WorkerPool"]

log = logging.getLogger("sidecar.signing.workers")

#: Modules the forkserver imports once, so that a new worker starts warm.
PRELOAD = (
    "sidecar.signing.pdf_checks",
    "sidecar.signing.pades_verify",
    "pyhanko.pdf_utils.reader",
    "sidecar.signing.xades",
)

T = TypeVar("T")


class WorkerLost(RuntimeError):
    """A worker process died while running a step (memory ceiling reached, killed)."""


def _start_worker(memory: int | None, daemon_pid: int) -> None:
    """Initializer of every worker: its memory ceiling, and its end with the daemon's."""
    _exit_with(daemon_pid)
    if memory is None:
        return
    try:
        import resource
    except ImportError:  # Windows: no rlimits; deadlines still apply
        return
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))


def _exit_with(daemon_pid: int) -> None:
    """End this worker when the daemon's process ends, however it ends.

    A pool's workers otherwise outlive a daemon killed with SIGKILL (or by a crash):
    each waits forever on a queue whose writing end it holds itself, and keeps the
    forkserver alive with it. A thread waits for the daemon's end: on a pidfd where
    there is one (Linux; immune to the pid being reused), on the parent's handle
    where the daemon is the parent (spawn, i.e. Windows), else by polling.
    """

    def poll() -> None:
        if os.name == "nt":  # os.kill would end the process: never poll there
            threading.Event().wait()
        while True:
            time.sleep(1.0)
            try:
                os.kill(daemon_pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:  # alive, another user's (pid reused): keep on
                continue

    parent = multiprocessing.parent_process()
    wait: Callable[[], object] = poll
    if parent is not None and parent.pid == daemon_pid:
        wait = parent.join
    elif hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(daemon_pid)
        except ProcessLookupError:  # already gone
            os._exit(0)
        except OSError:  # a seccomp filter or an old kernel: poll instead
            pass
        else:
            wait = functools.partial(select.select, [pidfd], [], [])

    def watch() -> None:
        wait()
        os._exit(0)  # nothing to flush: a worker holds no state of its own

    threading.Thread(target=watch, name="daemon-watch", daemon=True).start()


@contextlib.contextmanager
def _main_not_inherited() -> Iterator[None]:
    """While workers (or the forkserver) start: a ``__main__`` with no file and no spec,
    so that multiprocessing has no main script to run again in them."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _ready() -> None:
    """Run once per worker by :meth:`WorkerPool.start`: nothing, the process exists."""


class WorkerPool:
    """A lazily started pool of worker processes, replaced when one of them dies.

    ``name`` is for the logs; ``memory`` is each worker's address-space ceiling in
    bytes (POSIX only), ``None`` for none.
    """

    def __init__(self, name: str, *, workers: int, memory: int | None = None) -> None:
        if workers < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.name = name
        self.workers = workers
        self.memory = memory
        self._pool: ProcessPoolExecutor | None = None

    def _ensure(self) -> ProcessPoolExecutor:
        if self._pool is None:
            if "forkserver" in multiprocessing.get_all_start_methods():
                context = multiprocessing.get_context("forkserver")
                # Only the first pool's call matters (one forkserver): hence one list.
                context.set_forkserver_preload(list(PRELOAD))
            else:
                context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=context,
                initializer=_start_worker,
                initargs=(self.memory, os.getpid()),
            )
        return self._pool

    async def start(self) -> None:
        """Start every worker now, so that the first requests do not pay for it."""
        pool = self._ensure()
        loop = asyncio.get_running_loop()
        with _main_not_inherited():  # processes start on submission
            started = [loop.run_in_executor(pool, _ready) for _ in range(self.workers)]
        await asyncio.gather(*started)

    async def run(self, fn: Callable[..., T], /, *args: Any, deadline: float | None = None) -> T:
        """``fn(*args)`` in a worker process.

        Raises what ``fn`` raised; :class:`WorkerLost` when the worker died (the pool
        is replaced for the next call); :class:`TimeoutError` after ``deadline``
        seconds (the workers are stopped: a step stuck in C code cannot be
        interrupted otherwise).
        """
        pool = self._ensure()
        loop = asyncio.get_running_loop()
        try:
            # A pool found broken since the last call raises here, on submission.
            with _main_not_inherited():  # a replacement worker may start here
                future = loop.run_in_executor(pool, functools.partial(fn, *args))
            return await asyncio.wait_for(future, deadline)
        except TimeoutError:
            log.warning("%s worker: a step took over %.0f s, workers stopped", self.name, deadline)
            self._discard(pool)
            raise
        except BrokenProcessPool:
            log.warning("%s worker died (memory ceiling?): pool restarted", self.name)
            self._discard(pool)
            raise WorkerLost(f"a {self.name} worker process died") from None

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        processes = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.kill()
        if self._pool is pool:
            self._pool = None

    def close(self) -> None:
        """Stop the workers (blocking; idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
