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

The handoff costs the worker as little idle time as it can: each worker has one
long-lived pump thread, the only user of its pipe. The caller pickles its step on the
loop and queues it; the pump writes it, waits for the reply within the step's deadline
(past it, it kills the worker), and the moment the reply is read takes the worker's
next step itself, under the pool's lock and by the same fairness rules, and writes it,
before it unpickles the reply and hands it to the caller's loop (one
``call_soon_threadsafe``). So a worker never waits for the loop (busy under load) nor
for a new thread between two steps. Steps are not pipelined (written to a worker still
busy with another): a step's deadline counts from when its worker takes it, and a
killed worker (deadline, cancelled caller) must take no queued step down with it.
Workers run at a lower CPU priority than the daemon (:data:`WORKER_NICENESS`).
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
import queue
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
from multiprocessing.reduction import ForkingPickler
from typing import Any, TypeVar

from ..errors import Busy, InternalError
from ..health import CheckResult, HealthCheck

__all__ = [
    "PRELOAD",
    "WORKER_NICENESS",
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

#: How much lower than the daemon's the workers' CPU scheduling priority is (a POSIX
#: nice increment; ``WorkerPool(niceness=...)``). The daemon's event loop answers every
#: request and hands the workers their steps: on a saturated machine (2 cores under the
#: mixed load of issue 19) a worker that competes as its equal delays each of the loop's
#: wake-ups. At +5 the kernel gives the loop ~3 times a worker's share when both want a
#: core, and the worker every cycle the loop leaves. Best effort: where there is no
#: ``os.nice`` (Windows) workers run at the daemon's priority.
WORKER_NICENESS = 5

T = TypeVar("T")


class WorkerLost(RuntimeError, InternalError):
    """A worker process died while running a step (memory ceiling reached, killed)."""


class WorkersUnavailable(RuntimeError, Busy):
    """No worker took the step: none became free in time, or the pool is closing."""

    def __init__(self, detail: str, *, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


def _start_worker(memory: int | None, daemon_pid: int, niceness: int = 0) -> None:
    """Initializer of every worker: its end with the daemon's, its priority below the
    daemon's (:data:`WORKER_NICENESS`), its memory ceiling."""
    _exit_with(daemon_pid)
    if niceness > 0 and hasattr(os, "nice"):
        try:
            os.nice(niceness)
        except OSError as exc:  # a sandbox (seccomp) may refuse it: run at the daemon's
            log.debug("worker priority unchanged: %s", exc)
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


def _worker_main(conn: Connection, memory: int | None, daemon_pid: int, niceness: int = 0) -> None:
    """A worker's life: run the steps it is sent, one at a time, until its pipe closes."""
    # Ctrl-C in a terminal reaches the whole process group: the daemon decides when a
    # worker ends (it kills it), not the keyboard.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # What the forkserver preloaded is shared with it until written: the collector
    # would write to every object it inherited (its bookkeeping lives in the object),
    # copying each page per worker. Frozen, they are never collected here.
    gc.freeze()
    _start_worker(memory, daemon_pid, niceness)
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
    # Were multiprocessing's resource tracker running (started elsewhere in this
    # process: see _without_resource_tracker), it would end too. Its ``_stop`` waits for
    # its end: once the forkserver and the workers, which held its pipe, are gone, it
    # reads end of file at once.
    from multiprocessing import resource_tracker

    tracker = getattr(resource_tracker, "_resource_tracker", None)
    stop_tracker = getattr(tracker, "_stop", None)
    if stop_tracker is not None and getattr(tracker, "_pid", None) is not None:
        try:
            stop_tracker()
        except (OSError, ChildProcessError) as exc:
            log.debug("the resource tracker did not stop: %s", exc)
    log.info("no worker process left: the forkserver stopped until the next one")


def _without_resource_tracker() -> None:
    """Before the forkserver's first start: no resource tracker process (~7 MB of PSS).

    The forkserver starts multiprocessing's resource tracker and hands its pipe to
    every worker. It unlinks the named semaphores and shared-memory blocks a crashed
    process leaves behind; neither the daemon nor its workers make any (they talk over
    pipes, which are not tracked). Its pipe's end is ``/dev/null`` instead: the
    tracker's "alive" probe succeeds, and a registration, if some library ever made
    one, is dropped rather than tracked. Left alone where a tracker runs already (one
    that something else in this process started), or where CPython's private
    ``_resource_tracker._fd`` is missing: the tracker then starts as before.
    """
    from multiprocessing import resource_tracker

    tracker = getattr(resource_tracker, "_resource_tracker", None)
    if tracker is None or getattr(tracker, "_fd", 0) is not None:
        return
    with tracker._lock:  # its own: ensure_running takes it too
        if tracker._fd is None:
            tracker._fd = os.open(os.devnull, os.O_WRONLY)


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        _without_resource_tracker()
        context = multiprocessing.get_context("forkserver")
        # Only the first start's call matters (one forkserver): hence one list.
        context.set_forkserver_preload(list(PRELOAD))
        return context
    return multiprocessing.get_context("spawn")


class _Worker:
    """One worker process, the daemon's end of its pipe, and its pump thread's inbox.

    The pump thread (:meth:`WorkerPool._pump`) is the pipe's only user: it sends the
    steps it is handed, waits for their replies, and closes the pipe when it ends.
    """

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        #: When it last ended a step (or started): its idle exit counts from there.
        self.last_used = time.monotonic()
        #: Steps handed to its pump thread by the loop; ``None`` tells the pump to end.
        self.inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    def exchange(self, payload: bytes | memoryview, deadline: float | None) -> tuple[str, Any]:
        """Blocking (its pump thread): send a pickled step, wait for the reply.

        ``("reply", bytes)``, ``("timeout", None)`` (no reply within ``deadline``
        seconds: the worker still runs it) or ``("lost", None)`` (the worker died, or
        was killed: its end of the pipe closed).
        """
        try:
            self.conn.send_bytes(payload)
            if deadline is not None and not self.conn.poll(deadline):
                return ("timeout", None)
            return ("reply", self.conn.recv_bytes())
        except (EOFError, OSError):
            return ("lost", None)
        except Exception as exc:  # e.g. MemoryError: the pipe is out of step, the worker goes
            log.error("worker %d: its pipe failed (%r): replaced", self.pid, exc)
            return ("lost", None)

    def kill(self) -> None:
        """SIGKILL (harmless if it is dead already): its pump reads end of file."""
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self.process.kill()

    def close(self) -> None:
        """Close the pipe (an idle worker reads end of file and ends): by its pump only,
        or before it has one (a descriptor closed under a reading thread may be reused
        by another file while that thread still reads)."""
        with contextlib.suppress(OSError):
            self.conn.close()


def _unpickled(reply: bytes) -> tuple[str, Any]:
    """A worker's reply: ``("ok", result)`` or ``("raised", exception)``."""
    try:
        ok, value = ForkingPickler.loads(reply)
    except Exception as exc:  # the reply was read whole but does not unpickle
        return ("raised", exc)
    return ("ok", value) if ok else ("raised", value)


@dataclass(eq=False)
class _Job:
    """A step: waiting for a worker (in ``_waiters``), then running (in ``_busy``)."""

    client: str | None
    #: The kind of step (the pool's name, or a :meth:`WorkerPool.kind`'s).
    kind: str
    #: Workers one client may hold at once for steps of this kind (``None``: all).
    limit: int | None
    #: ``(fn, args)`` pickled by the caller: the pump only writes it.
    payload: bytes | memoryview = field(repr=False)
    deadline: float | None
    #: The caller's: set on its loop with ``(outcome, value)``.
    future: asyncio.Future[tuple[str, Any]] = field(repr=False)
    loop: asyncio.AbstractEventLoop = field(repr=False)
    order: int
    since: float
    #: When a worker took it, and which (0 and ``None`` while it waits).
    started: float = 0.0
    worker: _Worker | None = field(default=None, repr=False)
    #: Its caller went away (cancelled): its worker was killed on purpose.
    abandoned: bool = False

    def settle(self, outcome: tuple[str, Any]) -> None:
        """From any thread: hand ``outcome`` to the caller, on its loop."""

        def settle() -> None:
            if not self.future.done():
                self.future.set_result(outcome)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(settle)


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
    ``niceness``: how much lower than the daemon's its workers' CPU priority is
    (:data:`WORKER_NICENESS`; 0: the same).

    The books (who waits, who runs what) are kept under a lock: the loop adds steps and
    gives up on them, and each worker's pump thread, once it has read a reply, takes
    the worker's next step itself (see the module's docstring).
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
        niceness: int = WORKER_NICENESS,
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
        self.niceness = niceness
        #: Guards the books below: the loop's thread and the pump threads share them.
        self._lock = threading.Lock()
        self._alive: list[_Worker] = []
        self._idle: list[_Worker] = []
        self._busy: dict[_Worker, _Job] = {}
        self._waiters: list[_Job] = []
        self._replaced = 0
        # The loop's only:
        self._starting: set[asyncio.Task[None]] = set()
        self._order = itertools.count()
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
                args=(theirs, self.memory, os.getpid(), self.niceness),
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
        threading.Thread(
            target=self._pump,
            args=(worker,),
            name=f"{self.name}-worker-{worker.pid}",
            daemon=True,  # never holds the interpreter's exit: the worker gets killed
        ).start()
        with self._lock:
            self._alive.append(worker)
            self._idle.append(worker)
            handed = self._dispatch()
        _hand_out(handed)
        self._arm_idle_exit()

    @property
    def on_demand(self) -> bool:
        """Whether workers start on need (with ``idle_exit``) rather than all at once."""
        return self.idle_exit is not None

    def _wanted(self) -> int:
        """Under the lock: how many processes the pool should have (alive or starting):
        all of them, or on demand one per step running or waiting (each step holds one
        worker)."""
        if not self.on_demand:
            return self.workers
        return min(self.workers, len(self._busy) + len(self._waiters))

    def _top_up(self) -> None:
        """Start processes until the pool has what it wants (alive or starting)."""
        while not self._closed:
            with self._lock:
                if len(self._alive) + len(self._starting) >= self._wanted():
                    return
            task = asyncio.get_running_loop().create_task(self._spawn())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    def pids(self) -> list[int]:
        """The worker processes' ids (alive ones)."""
        with self._lock:
            return [w.pid for w in self._alive]

    async def start(self) -> None:
        """Start every worker now, so that the first requests do not pay for it; a pool
        with ``idle_exit`` starts nothing here: its workers start on need (its first
        steps pay for it, a second or so), so that an idle daemon stays light."""
        self._top_up()
        if self._starting:
            await asyncio.gather(*list(self._starting))

    # -- the pump: one thread per worker -----------------------------------------------

    def _pump(self, worker: _Worker) -> None:
        """A worker's thread: send each step it is handed, wait for the reply (within
        the step's deadline), and the moment a reply is read take the worker's next
        step under the lock and send it, before the reply is unpickled and handed to
        its caller's loop: the worker waits for neither the loop nor a new thread."""
        job = worker.inbox.get()
        while job is not None:
            outcome, reply = worker.exchange(job.payload, job.deadline)
            if outcome != "reply":
                self._lost(worker, job)
                job.settle((outcome, None))
                break
            following = self._next_step(worker)
            job.settle(_unpickled(reply))
            job = following if following is not None else worker.inbox.get()
        worker.close()

    def _next_step(self, worker: _Worker) -> _Job | None:
        """In ``worker``'s pump, its step done: free it, and give the waiting steps the
        free workers; the step ``worker`` takes, if any (the others go to their
        workers' inboxes)."""
        with self._lock:
            self._busy.pop(worker, None)
            if self._closed:
                worker.kill()
                worker.inbox.put(None)
                return None
            worker.last_used = time.monotonic()
            self._idle.append(worker)  # last in, first out: the least used ones age out
            handed = self._dispatch()
        following = None
        for taker, job in handed:
            if taker is worker:
                following = job
            else:
                taker.inbox.put(job)
        return following

    def _lost(self, worker: _Worker, job: _Job) -> None:
        """In ``worker``'s pump: it died, was killed, or ran over ``job``'s deadline
        (killed now): off the books, and its replacement started on the loop."""
        worker.kill()
        with self._lock:
            self._busy.pop(worker, None)
            with contextlib.suppress(ValueError):
                self._alive.remove(worker)
            if self._closed:
                return
            self._replaced += 1
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to replace
            job.loop.call_soon_threadsafe(self._top_up)

    # -- scheduling --------------------------------------------------------------------

    def _prune_idle(self) -> None:
        """Replace idle workers that died (killed from outside, OOM): an idle worker
        never writes, so a readable pipe is its end of file. (Its pump waits on its
        inbox, not on the pipe: no other thread reads it now.)"""
        with self._lock:
            for worker in list(self._idle):
                try:
                    dead = worker.conn.poll(0)
                except (OSError, ValueError):
                    dead = True
                if dead:
                    log.warning("%s worker %d died while idle: replaced", self.name, worker.pid)
                    self._idle.remove(worker)
                    self._alive.remove(worker)
                    self._replaced += 1
                    worker.kill()
                    worker.inbox.put(None)

    def _dispatch(self) -> list[tuple[_Worker, _Job]]:
        """Under the lock: give idle workers to waiting steps: the client holding fewest
        first, then in order of arrival; a client at its share (of that kind of step)
        waits. The pairs made, for the caller to hand to the pumps."""
        handed: list[tuple[_Worker, _Job]] = []
        while self._idle and self._waiters:
            held = Counter(job.client for job in self._busy.values())
            held_of_kind = Counter((job.client, job.kind) for job in self._busy.values())
            self._waiters = [w for w in self._waiters if not w.future.done()]
            eligible = [
                w
                for w in self._waiters
                if w.limit is None or held_of_kind[w.client, w.kind] < w.limit
            ]
            if not eligible:
                break
            chosen = min(eligible, key=lambda w: (held[w.client], w.order))
            self._waiters.remove(chosen)
            worker = self._idle.pop()
            chosen.started = time.monotonic()
            chosen.worker = worker
            self._busy[worker] = chosen
            handed.append((worker, chosen))
        return handed

    def _expire(self, job: _Job, timeout: float) -> None:
        """On the loop, ``timeout`` seconds after ``job`` came: refused if it still waits."""
        with self._lock:
            waited = job in self._waiters
            if waited:
                self._waiters.remove(job)
        if waited and not job.future.done():
            job.future.set_exception(
                WorkersUnavailable(f"every {self.name} worker stayed busy for {timeout:g} s")
            )

    def _abandon(self, job: _Job) -> None:
        """On the loop: ``job``'s caller went away: out of the queue, or its worker killed
        (it would work for nobody); its pump then replaces it."""
        with self._lock:
            if job in self._waiters:
                self._waiters.remove(job)
                return
            worker = job.worker
            if worker is None or self._busy.get(worker) is not job:
                return  # done already
            job.abandoned = True
        worker.kill()

    # -- idle exit ---------------------------------------------------------------------

    def _arm_idle_exit(self) -> None:
        """Check again when the idle worker unused the longest reaches ``idle_exit``
        (while every worker is busy, ``idle_exit`` from now: the pumps free workers
        without the loop, so the check does not wait for a step's end to be armed)."""
        if self.idle_exit is None or self._closed or self._idle_timer is not None:
            return
        with self._lock:
            if not self._alive:
                return  # armed again when a worker starts
            oldest = min((worker.last_used for worker in self._idle), default=time.monotonic())
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
        with self._lock:
            expired = [w for w in self._idle if now - w.last_used >= self.idle_exit]
            for worker in expired:
                self._idle.remove(worker)
                self._alive.remove(worker)
            left = len(self._alive)
        if not left and not self._starting:
            self._dormant = True
        if expired:
            log.info(
                "%s workers: %d process(es) unused for %g s end (%d left); "
                "the next steps start them again",
                self.name,
                len(expired),
                self.idle_exit,
                left,
            )
            for worker in expired:
                worker.inbox.put(None)  # its pump closes the pipe: end of file ends it
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

    def _fail_waiters(self, detail: str) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.future.done():
                waiter.future.set_exception(WorkersUnavailable(detail))

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
        # Pickled here, whole, before it waits: the pump that takes it only writes it,
        # and arguments that do not pickle are the caller's error at once.
        payload = ForkingPickler.dumps((fn, args))
        loop = asyncio.get_running_loop()
        job = _Job(
            client,
            step.name,
            step.limit,
            payload,
            step.deadline if deadline is None else deadline,
            loop.create_future(),
            loop,
            next(self._order),
            time.monotonic(),
        )
        self._dormant = False
        self._prune_idle()
        with self._lock:
            self._waiters.append(job)
            handed = self._dispatch()
        _hand_out(handed)
        self._top_up()  # on demand: a worker for this step, if the pool may have one more
        expiry = None
        if step.queue_timeout is not None and job.worker is None:
            expiry = loop.call_later(step.queue_timeout, self._expire, job, step.queue_timeout)
        try:
            outcome, value = await job.future
        except asyncio.CancelledError:
            self._abandon(job)
            raise
        finally:
            if expiry is not None:
                expiry.cancel()
        if outcome == "timeout":
            log.warning(
                "%s worker %d: a step ran over %g s: killed and replaced",
                self.name,
                job.worker.pid if job.worker else 0,
                job.deadline,
            )
            raise TimeoutError(f"a {self.name} step ran over {job.deadline:g} s")
        if outcome == "lost":
            if self._closed:
                raise WorkersUnavailable(f"the {self.name} workers are stopping")
            pid = job.worker.pid if job.worker else 0
            log.warning("%s worker %d died (memory ceiling?): replaced", self.name, pid)
            raise WorkerLost(f"a {self.name} worker process died")
        if outcome == "ok":
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
        with self._lock:
            waiting = [w for w in self._waiters if not w.future.done()]
            running = [job.started for job in self._busy.values()]
            alive = len(self._alive)
        return PoolStatus(
            workers=self.workers,
            alive=alive,
            busy=len(running),
            waiting=len(waiting),
            starting=len(self._starting),
            longest_running=max((now - started for started in running), default=0.0),
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
        with self._lock:
            workers, idle, self._alive, self._idle = self._alive, self._idle, [], []
        for worker in workers:
            worker.kill()  # a step under way gets EOF: its caller is answered
        for worker in idle:
            worker.inbox.put(None)  # its pump ends, closing the pipe
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


def _hand_out(handed: list[tuple[_Worker, _Job]]) -> None:
    """Give each worker's pump the step :meth:`WorkerPool._dispatch` paired it with."""
    for worker, job in handed:
        worker.inbox.put(job)


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
