"""Worker processes: results and errors cross back, a dead or stuck worker is replaced,
and the XAdES drafting survives a killed worker without losing the request."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sidecar.keys import Signer
from sidecar.signing.report import Indication, Level
from sidecar.signing.trust_binding import TrustTimestampSource, TrustValidationDataSource
from sidecar.signing.workers import (
    PRELOAD,
    SATURATED_AFTER,
    STUCK_AFTER,
    WORKER_NICENESS,
    WorkerLost,
    WorkerPool,
    WorkersUnavailable,
    pool_check,
)
from sidecar.signing.xades import sign_xml
from sidecar.signing.xades_verify import VerificationPolicy, verify_xml
from sidecar.signing.xml_safety import MalformedXml, XmlLimitExceeded, parse_xml
from sidecar.trust import TrustServices
from tests.fixtures.xades import FORM


@pytest.fixture
async def pool() -> WorkerPool:
    workers = WorkerPool("test", workers=1)
    await workers.start()
    yield workers  # type: ignore[misc]
    workers.close()


def _pids(pool: WorkerPool) -> list[int]:
    return pool.pids()


def _modules_and_frozen() -> tuple[list[str], int]:
    return sorted(sys.modules), gc.get_freeze_count()


async def test_a_worker_starts_warm_and_shares_what_it_inherited(pool: WorkerPool) -> None:
    """A worker has the forkserver's preloaded modules, and the objects it inherited are
    frozen: its collector never writes to (so never copies) the pages it shares."""
    modules, frozen = await pool.run(_modules_and_frozen)
    assert set(PRELOAD) <= set(modules)
    assert frozen > 10_000, frozen  # the preloaded signing stack: ~10^5 objects


async def test_a_worker_runs_below_the_daemons_priority(pool: WorkerPool) -> None:
    """The loop first: a worker's CPU priority is WORKER_NICENESS below the daemon's."""
    ours = os.nice(0)
    assert await pool.run(os.nice, 0) == min(19, ours + WORKER_NICENESS) > ours


async def test_results_and_errors_cross_back(pool: WorkerPool) -> None:
    assert await pool.run(os.getpid) != os.getpid()
    bad = b"<a>\n  <b></a>"
    with pytest.raises(MalformedXml) as here:
        parse_xml(bad)
    with pytest.raises(MalformedXml) as there:
        await pool.run(parse_xml, bad)
    assert there.value.line == here.value.line == 2
    assert there.value.column == here.value.column
    assert there.value.detail == here.value.detail


async def test_a_dead_worker_is_reported_then_replaced(pool: WorkerPool) -> None:
    first = await pool.run(os.getpid)
    with pytest.raises(WorkerLost):
        await pool.run(os._exit, 3)
    second = await pool.run(os.getpid)
    assert second != first


async def test_a_stuck_worker_is_stopped_at_the_deadline(pool: WorkerPool) -> None:
    stuck = _pids(pool)
    with pytest.raises(TimeoutError):
        await pool.run(time.sleep, 30, deadline=0.3)
    for pid in stuck:
        _wait_gone(pid)
    assert await pool.run(sum, [1, 2]) == 3


def _wait_gone(pid: int) -> None:
    for _ in range(500):  # SIGKILL was sent: it goes within moments, not 30 s
        if not _alive(pid):
            return
        time.sleep(0.01)
    raise AssertionError(f"worker {pid} still runs")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:  # gone (ENOENT), or going while being read (ESRCH)
        return False
    return state not in ("Z", "X")


async def test_drafting_survives_a_killed_worker(
    pool: WorkerPool, xades_signers: dict[str, Signer], xades_trust: TrustServices
) -> None:
    """kill -9 of the drafting worker between two requests: the next request's draft
    finds the pool broken, a fresh worker drafts it again, the signature is whole."""
    (pid,) = _pids(pool)
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid)
    document = await sign_xml(
        FORM,
        xades_signers["pkcs12-ec"],
        Level.B_LT,
        timestamps=TrustTimestampSource(xades_trust.tsa),
        validation_data=TrustValidationDataSource(xades_trust.revocation),
        workers=pool,
    )
    assert _pids(pool) and pid not in _pids(pool)
    (report,) = await verify_xml(
        document, VerificationPolicy(trust_roots=xades_trust.anchors.certificates)
    )
    assert (report.level, report.indication) == (Level.B_LT, Indication.TOTAL_PASSED), report


def test_workers_do_not_run_the_main_script_again(tmp_path: Path) -> None:
    """A launcher script without an ``if __name__ == "__main__"`` guard runs once, not
    once more per worker (multiprocessing's spawn and forkserver would re-run it)."""
    marker = tmp_path / "runs"
    script = tmp_path / "launcher.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, os
            from sidecar.signing.workers import WorkerPool

            with open({str(marker)!r}, "a") as f:
                f.write(f"{{os.getpid()}}\\n")

            async def go():
                pool = WorkerPool("launcher", workers=2)
                await pool.start()
                print(await pool.run(os.getpid))
                pool.close()

            asyncio.run(go())
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(marker.read_text().split()) == 1
    assert int(done.stdout.strip()) != done.returncode  # a worker's pid was printed


def test_workers_end_with_a_killed_daemon(tmp_path: Path) -> None:
    """kill -9 of the daemon: its workers (and the forkserver they came from) end too,
    rather than wait forever on a queue nobody writes to any more."""
    script = tmp_path / "daemon.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, os, sys
            from sidecar.signing.workers import WorkerPool

            async def go():
                pool = WorkerPool("orphans", workers=2)
                await pool.start()
                pids = pool.pids()
                pids.append(await pool.run(os.getppid))  # the forkserver
                print(" ".join(map(str, pids)), flush=True)
                await asyncio.sleep(600)

            if __name__ == "__main__":
                asyncio.run(go())
            """
        )
    )
    daemon = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None
        *workers, forkserver = map(int, daemon.stdout.readline().split())
        assert len(workers) == 2 and all(_alive(pid) for pid in [*workers, forkserver])
        assert forkserver != daemon.pid
    finally:
        daemon.kill()
        daemon.wait()
    for pid in [*workers, forkserver]:
        _wait_gone(pid)


def test_without_a_pidfd_a_worker_polls_for_the_daemon(tmp_path: Path) -> None:
    """Where pidfd_open is refused (a seccomp filter, an old kernel), the worker polls
    for the daemon's end instead, and still ends with it."""
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys, time
            from sidecar.signing import workers

            def refused(pid, flags=0):
                raise PermissionError(1, "Operation not permitted")

            os.pidfd_open = refused
            workers._exit_with(int(sys.argv[1]))
            print("watching", flush=True)
            time.sleep(60)
            sys.exit(3)
            """
        )
    )
    daemon = subprocess.Popen(["sleep", "60"])
    worker = subprocess.Popen(
        [sys.executable, str(script), str(daemon.pid)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline() == "watching\n"
        daemon.kill()
        daemon.wait()  # reaped: a zombie would still answer kill(pid, 0)
        assert worker.wait(timeout=20) == 0  # its own end, not the sleep's exit 3
    finally:
        worker.kill()
        daemon.kill()


async def test_a_document_that_ends_its_worker_twice_is_refused(
    xades_signers: dict[str, Signer],
) -> None:
    """Drafting is tried twice, each time on a fresh worker; a document that ends both
    is refused (``XmlLimitExceeded``: 422 xml_limits), not retried for ever.

    A worker that dies at that exact point on demand is a fault no real part gives
    reliably: this pool stands in for one whose workers are killed while drafting.
    """

    class Dying(WorkerPool):
        attempts = 0

        async def run(self, fn, /, *args, deadline=None, client=None):  # type: ignore[no-untyped-def]
            type(self).attempts += 1
            raise WorkerLost("a XAdES worker process died")

    with pytest.raises(XmlLimitExceeded, match="twice"):
        await sign_xml(FORM, xades_signers["pkcs12-rsa"], Level.B_B, workers=Dying("x", workers=1))
    assert Dying.attempts == 2


# -- deadlines, shares, stopping ----------------------------------------------------------


async def test_the_deadline_counts_from_when_a_worker_takes_the_step() -> None:
    """A step queued behind another is not timed out by its wait, and a step past its
    deadline kills its own worker only: the step running beside it finishes."""
    pool = WorkerPool("test", workers=2)
    await pool.start()
    try:
        beside = asyncio.create_task(pool.run(_sleep_then_pid, 1.5, deadline=10))
        await asyncio.sleep(0.2)
        stuck_pid = await pool.run(os.getpid)  # the other worker
        with pytest.raises(TimeoutError):
            await pool.run(time.sleep, 30, deadline=0.5)
        _wait_gone(stuck_pid)
        assert await beside not in (stuck_pid, 0)  # untouched by the kill
        # One worker left busy 1 s, the other replaced: a queued step gets its full 1 s.
        first = asyncio.create_task(pool.run(time.sleep, 0.8, deadline=1.0))
        second = asyncio.create_task(pool.run(time.sleep, 0.8, deadline=1.0))
        third = asyncio.create_task(pool.run(time.sleep, 0.8, deadline=1.0))
        await asyncio.gather(first, second, third)  # the third waited ~0.8 s, then ran 0.8 s
        assert pool.status().replaced == 1
    finally:
        pool.close()


def _sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


async def test_one_client_cannot_take_every_worker() -> None:
    """``per_client=1`` of two workers: client A's second heavy step waits while B's
    step runs at once on the other worker."""
    pool = WorkerPool("test", workers=2, per_client=1)
    await pool.start()
    try:
        a1 = asyncio.create_task(pool.run(time.sleep, 1.0, client="a"))
        await asyncio.sleep(0.1)
        a2 = asyncio.create_task(pool.run(_sleep_then_pid, 0.0, client="a"))
        await asyncio.sleep(0.1)
        assert pool.status().waiting == 1  # a2 waits although a worker is idle
        started = time.monotonic()
        assert await pool.run(sum, [1, 2], client="b") == 3
        assert time.monotonic() - started < 0.5  # did not wait for A's step
        assert not a2.done()
        await asyncio.gather(a1, a2)
    finally:
        pool.close()


async def test_a_freed_worker_goes_to_the_client_holding_fewest() -> None:
    """No share set: A holds a worker and waits for a second; C, who came after A,
    holds none and gets the next free worker first."""
    pool = WorkerPool("test", workers=2)
    await pool.start()
    try:
        order: list[str] = []

        async def step(client: str, seconds: float) -> None:
            await pool.run(time.sleep, seconds, client=client)
            order.append(client)

        a_long = asyncio.create_task(step("a", 0.6))
        b_long = asyncio.create_task(step("b", 0.3))
        await asyncio.sleep(0.1)
        a_next = asyncio.create_task(step("a", 0.0))  # waits: a holds its share
        c_next = asyncio.create_task(step("c", 0.0))  # waits: no worker free
        await asyncio.gather(a_long, b_long, a_next, c_next)
        assert order.index("c") < order.index("a"), order
    finally:
        pool.close()


def _started_at(seconds: float) -> float:
    started = time.time()
    time.sleep(seconds)
    return started


async def test_a_freed_worker_takes_the_next_step_without_the_loop(pool: WorkerPool) -> None:
    """Two steps queued on one worker, then the event loop blocked: the second step
    starts while the loop is still blocked (the worker's pump hands it over as soon as
    the first one's reply is read), not once the loop has seen that reply."""
    first = asyncio.create_task(pool.run(_started_at, 0.1))
    second = asyncio.create_task(pool.run(_started_at, 0.0))
    await asyncio.sleep(0)  # both submitted: the first is the worker's, the second waits
    assert pool.status().waiting == 1
    time.sleep(3.0)  # a busy loop: none of its callbacks runs meanwhile
    loop_free_again = time.time()
    assert await second < loop_free_again
    assert await first < await second


async def test_a_cancelled_step_kills_its_worker(pool: WorkerPool) -> None:
    (pid,) = _pids(pool)
    step = asyncio.create_task(pool.run(time.sleep, 30))
    await asyncio.sleep(0.3)
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step
    _wait_gone(pid)
    assert await pool.run(os.getpid) != pid


async def test_a_full_queue_is_refused_after_the_queue_timeout() -> None:
    pool = WorkerPool("test", workers=1, queue_timeout=0.3)
    await pool.start()
    try:
        busy = asyncio.create_task(pool.run(time.sleep, 1.0))
        await asyncio.sleep(0.1)
        with pytest.raises(WorkersUnavailable, match="busy"):
            await pool.run(os.getpid)
        await busy
        assert pool.status().waiting == 0
    finally:
        pool.close()


async def test_health_says_saturated_then_stuck() -> None:
    pool = WorkerPool("test", workers=1)
    await pool.start()
    check = pool_check(pool, "test-workers")
    try:
        assert (await check()).status == "ok"
        busy = asyncio.create_task(pool.run(time.sleep, 30))
        waiting = asyncio.create_task(pool.run(os.getpid))
        await asyncio.sleep(SATURATED_AFTER + 0.2)
        result = await check()
        assert result.status == "degraded" and "saturated" in result.detail, result
        assert result.data["busy"] == 1 and result.data["waiting"] == 1
        await asyncio.sleep(STUCK_AFTER - SATURATED_AFTER)
        assert "has run for" in (await check()).detail
    finally:
        pool.close()
    for task in (busy, waiting):
        with pytest.raises(WorkersUnavailable, match="stopping"):
            await task


async def test_stopping_gives_steps_their_grace_then_answers_them(pool: WorkerPool) -> None:
    """``stop_after`` (the daemon's SIGTERM): a step that ends within the grace ends
    normally; one that would not is answered ``WorkersUnavailable`` at its end, and
    ``close`` then returns at once although the step was stuck in its worker."""
    quick = await pool.run(_sleep_then_pid, 0.0)
    pool.stop_after(1.0)
    assert await pool.run(_sleep_then_pid, 0.2) == quick  # within the grace
    started = time.monotonic()
    with pytest.raises(WorkersUnavailable, match="stopping"):
        await pool.run(time.sleep, 60)
    assert time.monotonic() - started < 5
    started = time.monotonic()
    pool.close()
    assert time.monotonic() - started < 3
    _wait_gone(quick)
    with pytest.raises(WorkersUnavailable):
        await pool.run(os.getpid)


async def test_an_idle_worker_killed_from_outside_is_replaced_before_use(
    pool: WorkerPool,
) -> None:
    """kill -9 of an idle worker (the OOM killer, an operator): the next step runs on a
    fresh one instead of failing with WorkerLost."""
    (pid,) = _pids(pool)
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid)
    assert await pool.run(os.getpid) != pid
    assert pool.status().replaced == 1


async def test_idle_workers_exit_and_start_again_on_the_next_step() -> None:
    """With ``idle_exit``, workers end once the pool has had nothing to do for that
    long (health stays ok), and the next step starts fresh ones."""
    pool = WorkerPool("test", workers=2, idle_exit=0.5)
    check = pool_check(pool, "test-workers")
    try:
        # Two steps at once need both workers (they start on need: see the next test).
        ran = await asyncio.gather(pool.run(_sleep_then_pid, 0.3), pool.run(_sleep_then_pid, 0.3))
        pids = pool.pids()
        assert len(pids) == 2 and set(ran) == set(pids)
        for _ in range(200):  # bounded (20 s): the loop must run for the timer to fire
            if not any(_alive(pid) for pid in pids):
                break
            await asyncio.sleep(0.1)
        assert not any(_alive(pid) for pid in pids)
        assert pool.pids() == [] and pool.status().dormant
        result = await check()
        assert result.status == "ok" and "idle" in result.detail, result
        again = await pool.run(os.getpid)
        assert again not in pids and not pool.status().dormant
        assert (await check()).status == "ok"
    finally:
        pool.close()


async def test_workers_with_idle_exit_start_on_need() -> None:
    """A pool with ``idle_exit`` (the daemon's) starts no process before its first step
    (``start()`` included: an idle daemon stays one process, health ok), one per step
    that finds none free, and never more than its count."""
    pool = WorkerPool("test", workers=2, idle_exit=30)
    check = pool_check(pool, "test-workers")
    try:
        await pool.start()
        assert pool.pids() == [] and pool.status().dormant
        result = await check()
        assert result.status == "ok" and "idle" in result.detail, result
        first = await pool.run(os.getpid)
        assert pool.pids() == [first]  # one step at a time: one worker
        assert await pool.run(os.getpid) == first
        assert (await check()).status == "ok"  # 1 of 2 alive is normal here
        ran = await asyncio.gather(*(pool.run(_sleep_then_pid, 0.3) for _ in range(3)))
        assert len(set(ran)) == 2 and first in ran and len(pool.pids()) == 2
    finally:
        pool.close()


async def test_a_bursts_spare_worker_exits_while_the_pool_stays_busy() -> None:
    """After a burst that started both workers, steps one at a time keep using the same
    worker (the one freed last): the other, unused for ``idle_exit``, ends on its own."""
    pool = WorkerPool("test", workers=2, idle_exit=0.5)
    try:
        burst = await asyncio.gather(*(pool.run(_sleep_then_pid, 0.2) for _ in range(2)))
        assert len(set(burst)) == 2
        used = set()
        for _ in range(200):  # bounded (~20 s on a loaded machine); one step every 0.1 s
            used.add(await pool.run(os.getpid))
            if len(pool.pids()) == 1:
                break
            await asyncio.sleep(0.1)
        (kept,) = pool.pids()
        assert used == {kept}, used  # one worker served every step after the burst
        (spare,) = set(burst) - {kept}
        for _ in range(100):
            if not _alive(spare):
                break
            await asyncio.sleep(0.1)
        assert not _alive(spare) and not pool.status().dormant
    finally:
        pool.close()


async def test_a_busy_pool_does_not_exit() -> None:
    """A step running longer than ``idle_exit`` keeps its worker (and the others)."""
    pool = WorkerPool("test", workers=1, idle_exit=0.2)
    try:
        pid = await pool.run(os.getpid)
        assert await pool.run(_sleep_then_pid, 0.5) == pid  # busy when the timer fires
        assert await pool.run(_sleep_then_pid, 0.0) == pid  # idle 0 s in between
        assert pool.pids() == [pid]
    finally:
        pool.close()


def test_the_forkserver_stops_when_no_pool_has_a_worker(tmp_path: Path) -> None:
    """Once every pool of the process is idle past ``idle_exit``, the forkserver ends
    too (an idle daemon is one process); the next step starts it again; and no
    multiprocessing resource tracker runs beside it. In a process of its own: other
    tests' pools share this one's forkserver."""
    script = tmp_path / "idle.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, os, time
            from multiprocessing import forkserver, resource_tracker
            from sidecar.signing.workers import WorkerPool

            def children():
                found = []
                for task in os.listdir(f"/proc/{os.getpid()}/task"):
                    with open(f"/proc/{os.getpid()}/task/{task}/children") as f:
                        found += f.read().split()
                return found

            async def go():
                pool = WorkerPool("idle", workers=1, idle_exit=0.3)
                first = await pool.run(os.getpid)
                server = forkserver._forkserver._forkserver_pid
                assert server is not None and str(server) in children()
                # No multiprocessing resource tracker beside it (~7 MB: nothing to track).
                assert resource_tracker._resource_tracker._pid is None, "tracker runs"
                assert children() == [str(server)], children()
                for _ in range(100):
                    if forkserver._forkserver._forkserver_pid is None:
                        break
                    await asyncio.sleep(0.1)
                assert forkserver._forkserver._forkserver_pid is None, "still running"
                assert str(server) not in children(), "not reaped"
                assert await pool.run(os.getpid) != first
                assert forkserver._forkserver._forkserver_pid not in (None, server)
                assert resource_tracker._resource_tracker._pid is None, "tracker runs"
                pool.close()
                print("ok")

            asyncio.run(go())
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


async def test_two_kinds_of_step_share_the_pools_processes() -> None:
    """A pool shared by two kinds of step (XAdES drafts, PDF steps): however many steps
    of both kinds run at once, the tree holds at most the pool's count of workers, and
    each kind's steps run on those same processes."""
    pool = WorkerPool("PDF", workers=2, idle_exit=30)
    drafts = pool.kind("XAdES", deadline=10, queue_timeout=30)
    try:
        seen: set[int] = set()
        most = 0

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, len(pool.pids()))
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        steps = [pool.run(_sleep_then_pid, 0.2) for _ in range(3)]
        steps += [drafts.run(_sleep_then_pid, 0.2) for _ in range(3)]
        seen.update(await asyncio.gather(*steps))
        watcher.cancel()
        assert most <= 2, most
        assert len(seen) <= 2 and set(drafts.pids()) == set(pool.pids())
        assert drafts.status() == pool.status() and drafts.workers == 2
        drafts.close()  # its owner's to close: the pool still runs steps
        assert await drafts.run(os.getpid) in pool.pids()
    finally:
        pool.close()


async def test_a_kind_keeps_its_own_share_and_queue_timeout() -> None:
    """Each kind's ``per_client`` counts that kind's steps only (a client's PDF step does
    not block its draft), and its own ``queue_timeout`` refuses a draft that waited."""
    pool = WorkerPool("PDF", workers=2)
    drafts = pool.kind("XAdES", per_client=1, queue_timeout=0.3)
    await pool.start()
    try:
        pdf = asyncio.create_task(pool.run(time.sleep, 1.0, client="a"))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        assert await drafts.run(sum, [1, 2], client="a") == 3  # the other worker, at once
        assert time.monotonic() - started < 0.9
        first = asyncio.create_task(drafts.run(time.sleep, 1.0, client="a"))
        await asyncio.sleep(0.1)
        # Both workers busy: a's second draft waits (its share, and no worker), then is
        # refused after the kind's queue timeout, not the pool's (none: forever).
        with pytest.raises(WorkersUnavailable, match="busy"):
            await drafts.run(os.getpid, client="a")
        await asyncio.gather(pdf, first)
        assert pool.status().waiting == 0
    finally:
        pool.close()


def test_a_kind_grows_the_shared_pool_to_its_count() -> None:
    pool = WorkerPool("PDF", workers=1)
    assert pool.kind("XAdES", workers=3).workers == 3 and pool.workers == 3
    assert pool.kind("other", workers=2).workers == 3
    with pytest.raises(ValueError):
        pool.kind("bad", per_client=0)
