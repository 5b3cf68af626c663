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

Each worker is a process of its own with a pipe, and the pool hands jobs to them
itself (not a :class:`concurrent.futures.ProcessPoolExecutor`): so that

- a job's deadline counts from when a worker takes it, not from when it was queued,
  and only the worker running a job past its deadline is killed (then replaced);
- a job whose caller went away (a cancelled request, a stopping daemon) kills its
  worker rather than keep it busy for nobody;
- a per-client rule shares the workers: one client holds at most ``per_client`` of
  them at once, and a freed worker goes to the waiting client that holds the fewest,
  so that one client's heavy documents cannot starve another's;
- :meth:`WorkerPool.status` tells ``/v1/health`` when the workers are saturated or a
  job is stuck;
- :meth:`WorkerPool.close` kills the workers at once: nothing waits for a stuck one;
- with ``idle_exit`` (the daemon's pools), workers start on need — one when a step
  finds none free, up to the pool's count — and each ends once unused for that long (a
  practice PC is idle most of the day; a burst's spare workers), and the forkserver once no
  pool of the process has a worker: an idle daemon is one process, and the next step
  starts them again. Without it, :meth:`WorkerPool.start` starts them all at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import itertools
import logging
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
import types
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from ..errors import Busy, InternalError
from ..health import CheckResult, HealthCheck

__all__ = [
    "PRELOAD",
    "PoolKind",
    "PoolStatus",
    "WorkerLost",
    "WorkerPool",
    "WorkersUnavailable",
    "pool_check",
    "shared_or_own",
]

log = logging.getLogger("sidecar.signing.workers")

#: Modules the forkserver imports once, so that a new worker starts warm.
PRELOAD = (
    "sidecar.signing.pdf_checks",
    "sidecar.signing.pades_draft",
    "sidecar.signing.pades_verify",
    "pyhanko.pdf_utils.reader",
    # Imported by the first PDF read otherwise: each worker's own copy.
    "pyhanko.pdf_utils.filters",
    "pyhanko.pdf_utils.metadata.xmp_xml",
    "sidecar.signing.xades",
)

T = TypeVar("T")


class WorkerLost(RuntimeError, InternalError):
    """A worker process died while running a step (memory ceiling reached, killed)."""


class WorkersUnavailable(RuntimeError, Busy):
    """No worker took the step: none became free in time, or the pool is closing."""

    def __init__(self, detail: str, *, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


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


def _worker_main(conn: Connection, memory: int | None, daemon_pid: int) -> None:
    """A worker's life: run the steps it is sent, one at a time, until its pipe closes."""
    # Ctrl-C in a terminal reaches the whole process group: the daemon decides when a
    # worker ends (it kills it), not the keyboard.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # What the forkserver preloaded is shared with it until written: the collector
    # would write to every object it inherited (its bookkeeping lives in the object),
    # copying each page per worker. Frozen, they are never collected here.
    gc.freeze()
    _start_worker(memory, daemon_pid)
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[bool, Any] = (True, fn(*args))
        except BaseException as exc:  # every outcome goes back to the daemon
            reply = (False, exc)
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception as exc:  # an outcome that does not pickle
            conn.send((False, RuntimeError(f"the step's outcome cannot cross back: {exc!r}")))


#: Worker processes start one at a time: :func:`_main_not_inherited` swaps a global.
_START_LOCK = threading.Lock()

#: Every pool of this process: the forkserver they share stops when none has a worker.
_POOLS: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


def _stop_forkserver_if_unused() -> None:
    """Blocking, under :data:`_START_LOCK`: stop the forkserver when no pool has a worker
    process (alive or starting), so that an idle daemon is one process again; the next
    worker's start starts it anew (a second or so: its preloaded imports).

    ``ForkServer._stop`` is CPython's own (its tests use it; 3.8 and later); where it
    is missing the forkserver simply stays.
    """
    try:
        pools = list(_POOLS)
    except RuntimeError:  # the loop's thread made a pool meanwhile: it will need one
        return
    if any(pool._alive or pool._starting for pool in pools):
        return
    try:
        from multiprocessing import forkserver
    except ImportError:  # no forkserver here (Windows): nothing to stop
        return
    server = getattr(forkserver, "_forkserver", None)
    stop = getattr(server, "_stop", None)
    if stop is None or getattr(server, "_forkserver_pid", None) is None:
        return
    try:
        stop()
    except (OSError, ChildProcessError) as exc:
        log.debug("the forkserver did not stop: %s", exc)
        return
    # The forkserver started multiprocessing's resource tracker (~7 MB), which tracks
    # nothing of ours (pipes are not tracked): it ends too, and starts with the next
    # forkserver. Its ``_stop`` waits for its end: once the forkserver and the workers,
    # which held its pipe, are gone, it reads end of file at once.
    from multiprocessing import resource_tracker

    tracker = getattr(resource_tracker, "_resource_tracker", None)
    stop_tracker = getattr(tracker, "_stop", None)
    if stop_tracker is not None and getattr(tracker, "_pid", None) is not None:
        try:
            stop_tracker()
        except (OSError, ChildProcessError) as exc:
            log.debug("the resource tracker did not stop: %s", exc)
    log.info("no worker process left: the forkserver stopped until the next one")


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # Only the first start's call matters (one forkserver): hence one list.
        context.set_forkserver_preload(list(PRELOAD))
        return context
    return multiprocessing.get_context("spawn")


class _Worker:
    """One worker process and the daemon's end of its pipe."""

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        #: When it last ended a step (or started): its idle exit counts from there.
        self.last_used = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[str, Any]:
        """Blocking (a thread of its own): ``fn(*args)`` in the worker.

        ``("ok", result)``, ``("raised", exception)`` (raised by ``fn``, or pickling the
        arguments or the result failed: the pipe stays in step), ``("lost", None)``
        (the worker died, or was killed).
        """
        try:
            self.conn.send((fn, args))  # pickled whole before a byte is written
        except (EOFError, OSError):
            return ("lost", None)
        except Exception as exc:
            return ("raised", exc)
        try:
            ok, value = self.conn.recv()
        except (EOFError, OSError):
            return ("lost", None)
        except Exception as exc:  # the reply was read whole but does not unpickle
            return ("raised", exc)
        return ("ok", value) if ok else ("raised", value)

    def kill(self) -> None:
        """SIGKILL (harmless if it is dead already): a thread reading its pipe gets EOF."""
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self.process.kill()

    def close(self) -> None:
        """Close the pipe: only once no thread reads it (a descriptor closed under a
        reading thread may be reused by another file while that thread still reads)."""
        with contextlib.suppress(OSError):
            self.conn.close()


@dataclass
class _Job:
    client: str | None
    started: float
    #: The kind of step (the pool's name, or a :meth:`WorkerPool.kind`'s).
    kind: str = ""


@dataclass(eq=False)
class _Waiter:
    client: str | None
    since: float
    order: int
    future: asyncio.Future[_Worker] = field(repr=False)
    kind: str = ""
    #: Workers one client may hold at once for steps of this kind (``None``: all).
    limit: int | None = None


@dataclass(frozen=True)
class _Kind:
    """A kind of step and its rules: :meth:`WorkerPool.run`'s defaults for it."""

    name: str
    deadline: float | None
    #: Workers one client may hold at once for steps of this kind (``None``: all).
    limit: int | None
    queue_timeout: float | None


@dataclass(frozen=True)
class PoolStatus:
    """What :meth:`WorkerPool.status` reports (for ``/v1/health`` and the logs)."""

    workers: int
    alive: int
    busy: int
    waiting: int
    #: Worker processes being started (replacements included).
    starting: int
    #: Seconds the longest-running step has run; 0 when none runs.
    longest_running: float
    #: Seconds the longest-waiting step has waited for a worker; 0 when none waits.
    longest_waiting: float
    #: Workers killed (deadline, abandoned step) or lost since the pool started.
    replaced: int
    #: No worker yet, or they ended after ``idle_exit`` seconds without a step: the
    #: next step starts one.
    dormant: bool = False
    #: Workers start on need (the pool has an ``idle_exit``): fewer than ``workers``
    #: alive is the normal state, not a failure.
    on_demand: bool = False


def _call_in_thread(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[tuple[str, Any]],
    worker: _Worker,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    outcome = worker.call(fn, args)
    if outcome[0] == "lost":
        worker.close()  # this thread was its only reader

    def settle() -> None:
        if not future.done():
            future.set_result(outcome)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(settle)


class WorkerPool:
    """A lazily started pool of worker processes; a dead or stuck one is replaced.

    ``name`` is for the logs; ``memory`` is each worker's address-space ceiling in
    bytes (POSIX only), ``None`` for none. ``deadline`` is the default of
    :meth:`run`'s. ``per_client`` is how many workers one client may hold at once
    (``None``: all of them); ``queue_timeout`` how long a step may wait for a worker
    before :class:`WorkersUnavailable` (``None``: as long as it takes). ``idle_exit``:
    seconds without a step after which the workers end, until the next step starts
    them again (``None`` or 0: they never do), each counted from its own last step (so
    that the spare workers of a past burst end too); such a pool starts its workers on
    need, one per step that finds none free, never before its first step.
    """

    def __init__(
        self,
        name: str,
        *,
        workers: int,
        memory: int | None = None,
        deadline: float | None = None,
        per_client: int | None = None,
        queue_timeout: float | None = None,
        idle_exit: float | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("a worker pool needs at least one worker")
        if per_client is not None and per_client < 1:
            raise ValueError("per_client must be at least 1")
        self.name = name
        self.workers = workers
        self.memory = memory
        self.deadline = deadline
        self.per_client = per_client
        self.queue_timeout = queue_timeout
        self.idle_exit = idle_exit or None
        self._alive: list[_Worker] = []
        self._idle: list[_Worker] = []
        self._busy: dict[_Worker, _Job] = {}
        self._waiters: list[_Waiter] = []
        self._starting: set[asyncio.Task[None]] = set()
        self._order = itertools.count()
        self._replaced = 0
        self._closed = False
        self._stop_timer: asyncio.TimerHandle | None = None
        #: Killed by :meth:`stop_after`, to be reaped by :meth:`close`.
        self._killed: list[_Worker] = []
        self._idle_timer: asyncio.TimerHandle | None = None
        #: No worker until the first step: with ``idle_exit`` they start on need.
        self._dormant = self.idle_exit is not None
        self._reaping: set[asyncio.Future[None]] = set()
        _POOLS.add(self)

    # -- processes ---------------------------------------------------------------------

    def _spawn_blocking(self) -> _Worker:
        context = _context()
        with _START_LOCK, _main_not_inherited():
            ours, theirs = context.Pipe(duplex=True)
            process = context.Process(  # type: ignore[attr-defined]
                target=_worker_main,
                args=(theirs, self.memory, os.getpid()),
                name=f"sidecar-{self.name}-worker",
                daemon=True,
            )
            process.start()
        theirs.close()  # the worker's end lives in the worker only: its death is our EOF
        return _Worker(process, ours)

    async def _spawn(self) -> None:
        try:
            worker = await asyncio.to_thread(self._spawn_blocking)
        except Exception as exc:
            log.error("%s worker: cannot start a process (%s)", self.name, exc)
            if not self._alive and len(self._starting) <= 1:
                self._fail_waiters(f"no {self.name} worker process could be started")
            return
        if self._closed:
            worker.kill()
            worker.close()
            return
        self._alive.append(worker)
        self._idle.append(worker)
        self._dispatch()
        self._arm_idle_exit()

    @property
    def on_demand(self) -> bool:
        """Whether workers start on need (with ``idle_exit``) rather than all at once."""
        return self.idle_exit is not None

    def _wanted(self) -> int:
        """How many processes the pool should have (alive or starting): all of them, or
        on demand one per step running or waiting (each step holds one worker)."""
        if not self.on_demand:
            return self.workers
        waiting = sum(1 for w in self._waiters if not w.future.done())
        return min(self.workers, len(self._busy) + waiting)

    def _top_up(self) -> None:
        """Start processes until the pool has what it wants (alive or starting)."""
        while not self._closed and len(self._alive) + len(self._starting) < self._wanted():
            task = asyncio.get_running_loop().create_task(self._spawn())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    def pids(self) -> list[int]:
        """The worker processes' ids (alive ones)."""
        return [w.pid for w in self._alive]

    async def start(self) -> None:
        """Start every worker now, so that the first requests do not pay for it; a pool
        with ``idle_exit`` starts nothing here: its workers start on need (its first
        steps pay for it, a second or so), so that an idle daemon stays light."""
        self._top_up()
        if self._starting:
            await asyncio.gather(*list(self._starting))

    # -- scheduling --------------------------------------------------------------------

    def _holds(self, client: str | None, kind: str) -> int:
        return sum(1 for job in self._busy.values() if (job.client, job.kind) == (client, kind))

    def _may_take(self, client: str | None, kind: str, limit: int | None) -> bool:
        return limit is None or self._holds(client, kind) < limit

    def _prune_idle(self) -> None:
        """Replace idle workers that died (killed from outside, OOM): an idle worker
        never writes, so a readable pipe is its end of file."""
        for worker in list(self._idle):
            try:
                dead = worker.conn.poll(0)
            except (OSError, ValueError):
                dead = True
            if dead:
                log.warning("%s worker %d died while idle: replaced", self.name, worker.pid)
                self._retire(worker, in_use=False)

    def _take(self, client: str | None, kind: str) -> _Worker:
        worker = self._idle.pop()
        self._busy[worker] = _Job(client, time.monotonic(), kind)
        return worker

    def _dispatch(self) -> None:
        """Give idle workers to waiting steps: the client holding fewest first, then in
        order of arrival; a client at its ``per_client`` share (of that kind of step) waits."""
        while self._idle and self._waiters:
            held = Counter(job.client for job in self._busy.values())
            held_of_kind = Counter((job.client, job.kind) for job in self._busy.values())
            eligible = [
                w
                for w in self._waiters
                if not w.future.done()
                and (w.limit is None or held_of_kind[w.client, w.kind] < w.limit)
            ]
            self._waiters = [w for w in self._waiters if not w.future.done()]
            if not eligible:
                return
            chosen = min(eligible, key=lambda w: (held[w.client], w.order))
            self._waiters.remove(chosen)
            chosen.future.set_result(self._take(chosen.client, chosen.kind))

    def _release(self, worker: _Worker) -> None:
        self._busy.pop(worker, None)
        if self._closed:
            worker.kill()
            worker.close()
            return
        worker.last_used = time.monotonic()
        self._idle.append(worker)  # last in, first out: the least used ones age out
        self._dispatch()
        self._arm_idle_exit()

    # -- idle exit ---------------------------------------------------------------------

    def _arm_idle_exit(self) -> None:
        """Check again when the idle worker unused the longest reaches ``idle_exit``."""
        if self.idle_exit is None or self._closed or self._idle_timer is not None:
            return
        if not self._idle:
            return  # armed again when a step ends
        oldest = min(worker.last_used for worker in self._idle)
        delay = max(0.0, oldest + self.idle_exit - time.monotonic())
        self._idle_timer = asyncio.get_running_loop().call_later(delay, self._idle_check)

    def _idle_check(self) -> None:
        """End the workers unused for ``idle_exit`` seconds: all of them once the pool
        is idle, and after a burst the ones it no longer needs (steps take the worker
        freed last, so the spare ones stay unused)."""
        self._idle_timer = None
        if self._closed or self.idle_exit is None:
            return
        now = time.monotonic()
        expired = [w for w in self._idle if now - w.last_used >= self.idle_exit]
        for worker in expired:
            self._idle.remove(worker)
            self._alive.remove(worker)
        if not self._alive and not self._starting:
            self._dormant = True
        if expired:
            log.info(
                "%s workers: %d process(es) unused for %g s end (%d left); "
                "the next steps start them again",
                self.name,
                len(expired),
                self.idle_exit,
                len(self._alive),
            )
            for worker in expired:
                worker.close()  # an idle worker waits on its pipe: end of file ends it
            reaping = asyncio.ensure_future(asyncio.to_thread(self._reap, expired))
            self._reaping.add(reaping)
            reaping.add_done_callback(self._reaping.discard)
        self._arm_idle_exit()

    @staticmethod
    def _reap(workers: list[_Worker]) -> None:
        """Blocking: wait for idle workers told to end, kill one that does not; then
        stop the forkserver if no pool of this process has a worker any more."""
        with _START_LOCK:  # reaping (poll, join) and starting share multiprocessing's books
            for worker in workers:
                with contextlib.suppress(OSError, ValueError, AssertionError):
                    worker.process.join(2.0)
                    if worker.process.exitcode is None:
                        worker.kill()
                        worker.process.join(2.0)
            _stop_forkserver_if_unused()

    def _retire(self, worker: _Worker, *, in_use: bool) -> None:
        """Drop ``worker``, killing its process (stuck, or dead already), and start its
        replacement. ``in_use``: a thread still reads its pipe (and closes it)."""
        self._busy.pop(worker, None)
        with contextlib.suppress(ValueError):
            self._alive.remove(worker)
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        worker.kill()
        if not in_use:
            worker.close()
        self._replaced += 1
        if not self._closed:
            self._top_up()

    def _fail_waiters(self, detail: str) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.future.done():
                waiter.future.set_exception(WorkersUnavailable(detail))

    async def _acquire(self, client: str | None, kind: _Kind) -> _Worker:
        self._dormant = False
        self._prune_idle()
        self._top_up()
        if not self._waiters and self._idle and self._may_take(client, kind.name, kind.limit):
            return self._take(client, kind.name)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(
            client, time.monotonic(), next(self._order), loop.create_future(), kind.name, kind.limit
        )
        self._waiters.append(waiter)
        self._top_up()  # on demand: a worker for this step, if the pool may have one more
        self._dispatch()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), kind.queue_timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if waiter.future.done() and not waiter.future.exception():
                self._release(waiter.future.result())  # handed over as we gave up
            else:
                waiter.future.cancel()
            if isinstance(exc, TimeoutError):
                raise WorkersUnavailable(
                    f"every {self.name} worker stayed busy for {kind.queue_timeout:g} s"
                ) from None
            raise

    # -- the public part ---------------------------------------------------------------

    async def run(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        deadline: float | None = None,
        client: str | None = None,
    ) -> T:
        """``fn(*args)`` in a worker process, on behalf of ``client``.

        Raises what ``fn`` raised; :class:`WorkerLost` when the worker died (it is
        replaced); :class:`TimeoutError` when ``fn`` ran over ``deadline`` seconds
        (default: the pool's) counted from when a worker took it — that worker is
        killed and replaced: a step stuck in C code cannot be interrupted otherwise;
        :class:`WorkersUnavailable` when no worker took it within the queue timeout,
        or the pool is closed. A cancelled call kills its worker too.
        """
        return await self._processes()._run(self._steps(), fn, args, deadline, client)

    def _processes(self) -> WorkerPool:
        """The pool whose processes run this pool's steps: its own."""
        return self

    def _steps(self) -> _Kind:
        """This pool's kind of step: its deadline, per-client share and queue timeout."""
        return _Kind(self.name, self.deadline, self.per_client, self.queue_timeout)

    async def _run(
        self,
        step: _Kind,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        deadline: float | None,
        client: str | None,
    ) -> T:
        """:meth:`run` for one kind of step: its own deadline, share and queue timeout."""
        if self._closed:
            raise WorkersUnavailable(f"the {self.name} workers are stopping")
        deadline = step.deadline if deadline is None else deadline
        worker = await self._acquire(client, step)
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[tuple[str, Any]] = loop.create_future()
        threading.Thread(
            target=_call_in_thread,
            args=(loop, outcome, worker, fn, args),
            name=f"{self.name}-worker-{worker.pid}",
            daemon=True,  # never holds the interpreter's exit: the worker gets killed
        ).start()
        try:
            kind, value = await asyncio.wait_for(asyncio.shield(outcome), deadline)
        except TimeoutError:
            log.warning(
                "%s worker %d: a step ran over %g s: killed and replaced",
                self.name,
                worker.pid,
                deadline,
            )
            self._retire(worker, in_use=True)
            raise
        except asyncio.CancelledError:
            # Nobody waits for this step any more: its worker would work for nothing.
            self._retire(worker, in_use=True)
            raise
        if kind == "lost":
            self._retire(worker, in_use=False)
            if self._closed:
                raise WorkersUnavailable(f"the {self.name} workers are stopping")
            log.warning("%s worker %d died (memory ceiling?): replaced", self.name, worker.pid)
            raise WorkerLost(f"a {self.name} worker process died")
        self._release(worker)
        if kind == "ok":
            return value
        raise value

    def kind(
        self,
        name: str,
        *,
        workers: int | None = None,
        deadline: float | None = None,
        per_client: int | None = None,
        queue_timeout: float | None = None,
    ) -> PoolKind:
        """Another kind of step run by these same processes, with its own ``deadline``,
        ``per_client`` share (counted over that kind's steps) and ``queue_timeout``:
        two engines sharing one pool keep the process tree at :attr:`workers` processes
        in all rather than one set each (each worker costs ~15 to 25 MB of PSS). The pool
        grows to ``workers`` processes if it had fewer; its memory ceiling applies to
        both kinds. The pool's owner closes it; :meth:`PoolKind.close` does nothing."""
        if per_client is not None and per_client < 1:
            raise ValueError("per_client must be at least 1")
        if workers is not None and workers > self.workers:
            self.workers = workers
        return PoolKind(self, _Kind(name, deadline, per_client, queue_timeout))

    def status(self) -> PoolStatus:
        now = time.monotonic()
        waiting = [w for w in self._waiters if not w.future.done()]
        return PoolStatus(
            workers=self.workers,
            alive=len(self._alive),
            busy=len(self._busy),
            waiting=len(waiting),
            starting=len(self._starting),
            longest_running=max((now - j.started for j in self._busy.values()), default=0.0),
            longest_waiting=max((now - w.since for w in waiting), default=0.0),
            replaced=self._replaced,
            dormant=self._dormant,
            on_demand=self.on_demand,
        )

    def stop_after(self, seconds: float) -> None:
        """The daemon is stopping: steps under way (and waiting) have ``seconds`` more,
        then the workers are killed and their callers get :class:`WorkersUnavailable`,
        so that the daemon's requests end within its shutdown timeout."""
        if self._closed or self._stop_timer is not None:
            return
        self._stop_timer = asyncio.get_running_loop().call_later(seconds, self._kill_all)

    def _kill_all(self) -> list[_Worker]:
        self._closed = True
        self._fail_waiters(f"the {self.name} workers are stopping")
        for task in list(self._starting):
            task.cancel()
        workers, idle, self._alive, self._idle = self._alive, self._idle, [], []
        for worker in workers:
            worker.kill()  # a step under way gets EOF: its caller is answered
        for worker in idle:
            worker.close()
        self._killed.extend(workers)
        return workers

    def close(self) -> None:
        """Stop the workers now (idempotent): kill them, fail every waiting step.

        Workers hold nothing of their own, so nothing is lost by killing them; a
        stuck one must not hold the daemon's exit.
        """
        if self._stop_timer is not None:
            self._stop_timer.cancel()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._kill_all()
        killed, self._killed = self._killed, []
        with _START_LOCK:  # reaping (poll, join) and starting share multiprocessing's books
            for worker in killed:
                with contextlib.suppress(OSError, ValueError, AssertionError):
                    worker.process.join(2.0)


class PoolKind(WorkerPool):
    """One kind of step on a shared :class:`WorkerPool` (see :meth:`WorkerPool.kind`):
    what a pool offers its callers, the processes being the shared pool's."""

    def __init__(self, shared: WorkerPool, kind: _Kind) -> None:  # no pool of its own
        self.shared = shared
        self._kind = kind
        self.name = kind.name
        self.deadline = kind.deadline
        self.per_client = kind.limit
        self.queue_timeout = kind.queue_timeout
        #: The shared pool's processes (every kind's steps count against them).
        self.workers = shared.workers
        self.memory = shared.memory
        self.idle_exit = shared.idle_exit

    @property
    def on_demand(self) -> bool:
        return self.shared.on_demand

    def _processes(self) -> WorkerPool:
        return self.shared

    def _steps(self) -> _Kind:
        return self._kind

    def pids(self) -> list[int]:
        return self.shared.pids()

    async def start(self) -> None:
        await self.shared.start()

    def status(self) -> PoolStatus:
        return self.shared.status()

    def stop_after(self, seconds: float) -> None:
        """The daemon is stopping: so is the shared pool (every kind's steps)."""
        self.shared.stop_after(seconds)

    def close(self) -> None:
        """Nothing: the shared pool's owner closes it."""


def shared_or_own(
    shared: WorkerPool | None,
    name: str,
    *,
    workers: int,
    deadline: float | None = None,
    per_client: int | None = None,
    queue_timeout: float | None = None,
    idle_exit: float | None = None,
) -> WorkerPool:
    """``name``'s steps on ``shared``'s processes (:meth:`WorkerPool.kind`, the pool grown
    to ``workers`` if smaller), or without one a pool of their own of ``workers``."""
    if shared is not None:
        return shared.kind(
            name,
            workers=workers,
            deadline=deadline,
            per_client=per_client,
            queue_timeout=queue_timeout,
        )
    return WorkerPool(
        name,
        workers=workers,
        deadline=deadline,
        per_client=per_client,
        queue_timeout=queue_timeout,
        idle_exit=idle_exit,
    )


#: A step waiting this long for a worker means the workers are saturated.
SATURATED_AFTER = 1.0
#: A step running this long (normal ones take milliseconds) is reported as stuck.
STUCK_AFTER = 5.0


def pool_check(pool: WorkerPool, name: str) -> HealthCheck:
    """A ``/v1/health`` check: degraded while ``pool``'s workers are saturated (a step
    waited over :data:`SATURATED_AFTER` s for one), one is stuck (a step ran over
    :data:`STUCK_AFTER` s) or some could not be started."""

    async def check() -> CheckResult:
        status = pool.status()
        data = {
            "workers": status.workers,
            "alive": status.alive,
            "busy": status.busy,
            "waiting": status.waiting,
            "starting": status.starting,
            "longest_running_s": round(status.longest_running, 1),
            "replaced": status.replaced,
            "pids": pool.pids(),
        }
        problems = []
        if status.longest_waiting >= SATURATED_AFTER:
            problems.append(
                f"saturated: {status.waiting} step(s) waiting for a worker "
                f"(longest {status.longest_waiting:.1f} s)"
            )
        if status.longest_running >= STUCK_AFTER:
            problems.append(f"a step has run for {status.longest_running:.0f} s")
        fewer = status.alive < status.workers and not status.on_demand
        if fewer and not status.starting and not status.dormant:
            problems.append(f"{status.alive} of {status.workers} worker processes running")
        if problems:
            return CheckResult(name, "degraded", "; ".join(problems), data)
        if status.dormant:
            detail = "no worker process (idle): they start on the next step"
            return CheckResult(name, "ok", detail, data)
        return CheckResult(name, "ok", f"{status.alive} worker process(es)", data)

    return check
