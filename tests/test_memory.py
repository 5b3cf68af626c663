"""The daemon's malloc settings: its arenas capped, an operator's setting left alone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sidecar import memory

glibc = pytest.mark.skipif(
    memory._malloc_trim() is None, reason="glibc's malloc only (arenas, malloc_info)"
)

#: Threads allocating at once (each would get an arena of its own), then the arenas
#: glibc's ``malloc_info`` lists (one ``<heap nr=...>`` each).
_ARENAS = textwrap.dedent(
    """
    import ctypes, sys, threading
    from sidecar.memory import limit_arenas
    print(limit_arenas())
    barrier = threading.Barrier(8)
    def allocate():
        barrier.wait()
        kept = [bytearray(200_000) for _ in range(50)]
        barrier.wait()
    threads = [threading.Thread(target=allocate) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    stream = libc.fopen(sys.argv[1].encode(), b"w")
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    """
)


def _arenas(tmp_path: Path, **env: str) -> tuple[str, int]:
    report = tmp_path / "malloc.xml"
    environ = {
        k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")
    }
    done = subprocess.run(
        [sys.executable, "-c", _ARENAS, str(report)],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), report.read_text().count("<heap nr=")


@glibc
def test_the_daemons_arenas_are_capped(tmp_path: Path) -> None:
    """Eight threads allocating at once share ``ARENAS`` arenas (uncapped, glibc gives
    them up to 8 per core: more than that, which the operator's setting shows)."""
    done, arenas = _arenas(tmp_path)
    assert done == "True" and arenas <= memory.ARENAS, arenas
    done, arenas = _arenas(tmp_path, MALLOC_ARENA_MAX="8")
    assert done == "False" and arenas > memory.ARENAS, arenas  # the operator's wins


def test_the_sandbox_simulator_keeps_fewer_signed_notes() -> None:
    """``serve --sandbox``'s simulator keeps the last ``SANDBOX_KEPT_BOOKINGS`` booked
    notes (nothing reads them; ~70 KiB each), a test's simulator the default's."""
    from sidecar.cns.simulator import KEPT_BOOKINGS, SANDBOX_KEPT_BOOKINGS, CnsSimulator, _Recent

    assert SANDBOX_KEPT_BOOKINGS < KEPT_BOOKINGS
    simulator = CnsSimulator(kept_bookings=SANDBOX_KEPT_BOOKINGS)
    for index in range(SANDBOX_KEPT_BOOKINGS + 5):
        simulator.bookings[f"note-{index}"] = b"x" * 1000
    assert len(simulator.bookings) == SANDBOX_KEPT_BOOKINGS
    assert (
        f"note-{SANDBOX_KEPT_BOOKINGS + 4}" in simulator.bookings
        and "note-0" not in simulator.bookings
    )
    default = CnsSimulator().bookings
    assert isinstance(default, _Recent) and default.size == KEPT_BOOKINGS


def test_one_worker_per_core_beyond_the_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    """By default the shared pool has a worker per core beyond the event loop's, one to
    four (one on a 2-core practice PC); explicit settings stay as they are."""
    from sidecar.config import SigningSettings, default_workers

    for cores, workers in ((1, 1), (2, 1), (4, 3), (16, 4), (None, 1)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert default_workers() == workers
        assert SigningSettings().pdf_workers == workers
    assert SigningSettings(pdf_workers=2, xml_workers=3).pdf_workers == 2
