"""Worker processes: results and errors cross back, a dead or stuck worker is replaced,
and the XAdES drafting survives a killed worker without losing the request."""

from __future__ import annotations

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
from sidecar.signing.workers import WorkerLost, WorkerPool
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
