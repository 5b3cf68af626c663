"""Profiling the daemon's memory (not a part of sidecar): on ``PYTHONPATH``, in the
``sidecar serve`` process only, with ``SIDECAR_FOOTPRINT_DIR`` set:

- ``SIGUSR1`` starts tracemalloc (``SIDECAR_FOOTPRINT_FRAMES`` frames, default 20):
  started after the daemon's start, so only what the load allocates is traced;
- ``SIGUSR2`` writes ``snapN.txt`` (malloc's in-use and free bytes over every arena,
  SQLite's heap, the threads, what tracemalloc traces) and, when tracing,
  ``snapN.pickle`` (a snapshot: diff two with ``Snapshot.load(b).compare_to(a,
  "traceback")``).

    SIDECAR_FOOTPRINT_DIR=/tmp/fp PYTHONPATH=bench/footprint .venv/bin/sidecar serve --sandbox
    kill -USR1 $PID; (load); kill -USR2 $PID; (more load); kill -USR2 $PID

What malloc holds outside Python's objects (C libraries) is not traced: for that,
``memray attach --native --aggregate -o out.bin $PID`` then ``memray detach $PID``
(``pip install memray`` into ``.venv``), and its leaked records read with
``memray.FileReader(out.bin).get_leaked_allocation_records()``.
"""

import os
import sys

if os.environ.get("SIDECAR_FOOTPRINT_DIR") and "serve" in sys.orig_argv:
    import ctypes
    import gc
    import itertools
    import signal
    import threading
    import tracemalloc

    _COUNTER = itertools.count()
    _MB = 2**20

    class _Mallinfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in [
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            ]
        ]

    def _start(*_: object) -> None:
        tracemalloc.start(int(os.environ.get("SIDECAR_FOOTPRINT_FRAMES", "20")))

    def _dump(*_: object) -> None:
        import _sqlite3

        gc.collect()
        path = os.path.join(os.environ["SIDECAR_FOOTPRINT_DIR"], f"snap{next(_COUNTER)}")
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(path + ".pickle")
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _Mallinfo2
        info = libc.mallinfo2()
        sqlite = ctypes.CDLL(_sqlite3.__file__)
        sqlite.sqlite3_memory_used.restype = ctypes.c_int64
        with open(path + ".txt", "w", encoding="utf-8") as out:
            out.write(
                f"threads {threading.active_count()}; malloc in use "
                f"{info.uordblks / _MB:.1f} MB, free {info.fordblks / _MB:.1f} MB, "
                f"mmapped {info.hblkhd / _MB:.1f} MB; SQLite "
                f"{sqlite.sqlite3_memory_used() / _MB:.1f} MB; traced "
                f"{tracemalloc.get_traced_memory()[0] / _MB:.1f} MB\n"
            )

    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _dump)
