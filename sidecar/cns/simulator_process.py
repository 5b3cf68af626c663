"""The sandbox's CNS simulator in a process of its own, started and stopped with the daemon.

``serve --sandbox`` with no CNS URL configured forwards to the simulator
(:mod:`sidecar.cns.simulator`). Served from the daemon's own process, the simulator's
check of every deposit (the XSD, then our XAdES validator at B-LT: canonicalization,
digests, the signer's and the TSA's paths) ran on the daemon's event loop and held its
GIL: under a mixed load that was half of all the CPU the daemon's process spent (py-spy,
``bench/bench_mixed.py``), and every read waited behind it. The real CNS checks on its
own servers; the sandbox now does too, in a child process:

- :func:`serve_simulator_process` starts ``python -m sidecar.cns.simulator_process``
  with its configuration on stdin (one JSON line), and returns once the child has bound
  its port (a port taken is one clear line, as before). The URL is unchanged.
- The child ends when its stdin closes: the daemon closes it to stop it, and the
  operating system closes it when the daemon dies, however it dies (SIGKILL, a crash),
  so no simulator outlives its daemon. It ignores Ctrl-C: the daemon decides.
- It holds no key and no state the daemon needs; its bookings live as long as it does,
  as they did in the daemon (``GET /_simulator/stats``, whose ``pid`` is the child's).

Production has no such process: it is the sandbox's stand-in for the CNS.
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
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lxml import etree

    from .documents import MessageRule

__all__ = ["SimulatorChild", "SimulatorConfig", "SimulatorStartError", "serve_simulator_process"]

log = logging.getLogger("sidecar.cns.simulator")

#: How long the child may take to bind its port (a fresh interpreter on a loaded machine).
START_TIMEOUT = 60.0
#: How long a stopping child may take to close its server before it is killed.
STOP_TIMEOUT = 5.0


class SimulatorStartError(OSError):
    """The child could not bind its port (``reason`` in words) or did not start."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SimulatorConfig:
    """What the child needs to check deposits as the in-process simulator did: plain
    values (paths, strings), read again from files in the child."""

    host: str
    port: int
    #: The PEM file of the sandbox's trust anchors: XAdES verified at B-LT with them.
    roots: str
    #: The fee note's XSD (``cns.simulator_xsd`` or the ``fee-note`` profile's).
    xsd: str | None = None
    #: ``[cns] uuid_xpath`` and the profile files of the daemon's :class:`MessageRule`.
    uuid_xpath: str = ""
    profiles: tuple[str, ...] = field(default_factory=tuple)
    log_level: int = logging.WARNING


@dataclass
class SimulatorChild:
    """The running child: its URL and its process id."""

    url: str
    pid: int


@contextlib.asynccontextmanager
async def serve_simulator_process(config: SimulatorConfig) -> AsyncIterator[SimulatorChild]:
    """Run the simulator in a child process until the block exits; yields its URL.

    Raises :class:`SimulatorStartError` if the port cannot be bound (``reason``: "the
    port is taken"...) or the child does not start within :data:`START_TIMEOUT`.
    """
    process = await asyncio.to_thread(_start, config)
    try:
        url = await asyncio.wait_for(asyncio.to_thread(_ready, process), START_TIMEOUT)
    except BaseException:
        await asyncio.to_thread(_stop, process)
        raise
    try:
        yield SimulatorChild(url, process.pid)
    finally:
        await asyncio.to_thread(_stop, process)


def _start(config: SimulatorConfig) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecar.cns.simulator_process"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        # Its warnings go where the daemon's go.
        stderr=None,
        close_fds=True,
    )
    assert process.stdin is not None  # PIPE above
    process.stdin.write(json.dumps(asdict(config)).encode() + b"\n")
    process.stdin.flush()
    return process


def _ready(process: subprocess.Popen[bytes]) -> str:
    """Blocking: the child's first line, ``{"url": ...}`` or ``{"error": ...}``."""
    assert process.stdout is not None  # PIPE above
    line = process.stdout.readline()
    try:
        said: dict[str, Any] = json.loads(line) if line else {}
    except ValueError:
        said = {}
    if "url" in said:
        return str(said["url"])
    raise SimulatorStartError(
        str(said.get("error") or f"the simulator's process ended ({process.wait()})")
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Blocking: close its stdin (it stops), wait a little, else kill it."""
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log.warning("the CNS simulator's process did not stop: killed")
        process.kill()
        process.wait()


# -- the child -------------------------------------------------------------------------


def _child_main() -> None:
    """The child: bind, say so, serve until stdin closes."""
    # Ctrl-C in a terminal reaches the whole process group: the daemon stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout
    config = SimulatorConfig(**json.loads(stdin.readline()))
    logging.basicConfig(
        level=config.log_level, format="%(name)s: %(levelname)s: %(message)s", stream=sys.stderr
    )
    from ..ports import bind, bind_error

    # Bound before the signing stack is imported: the daemon learns of a taken port at
    # once, and connections queue in the backlog until the server answers.
    try:
        sock = bind(config.host, config.port)
        sock.listen(128)
    except OSError as exc:
        _say(stdout, {"error": bind_error(exc)})
        return
    port = sock.getsockname()[1]
    _say(stdout, {"url": f"http://{config.host}:{port}"})
    try:
        asyncio.run(_serve(config, sock, stdin))
    except Exception:
        # After the port was announced (the daemon runs on): its log says why, and its
        # ``cns`` health check says the simulator cannot be reached.
        log.exception("the sandbox's CNS simulator stopped")
        sys.exit(1)


def _say(stdout: IO[str], what: dict[str, str]) -> None:
    stdout.write(json.dumps(what) + "\n")
    stdout.flush()


async def _serve(config: SimulatorConfig, sock: Any, stdin: IO[bytes]) -> None:
    from aiohttp import web

    from ..signing.profiles import load_profile
    from .documents import MessageRule
    from .simulator import CnsSimulator, xades_verifier

    rule = MessageRule.of(config.uuid_xpath, [load_profile(Path(p)) for p in config.profiles])
    simulator = CnsSimulator(
        xsd=Path(config.xsd) if config.xsd else None,
        verifier=xades_verifier(Path(config.roots)),
        uuid_reader=_uuid_reader(rule),
    )
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()

    def watch() -> None:
        # EOF: the daemon closed the pipe, or ended. Nothing is written to stdin.
        with contextlib.suppress(OSError):
            while stdin.read(1 << 12):
                pass
        with contextlib.suppress(RuntimeError):  # the loop ended already
            loop.call_soon_threadsafe(closed.set)

    threading.Thread(target=watch, name="daemon-watch", daemon=True).start()
    runner = web.AppRunner(simulator.app(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        log.debug("CNS simulator (pid %d) serving", os.getpid())
        await closed.wait()
    finally:
        await runner.cleanup()


def _uuid_reader(rule: MessageRule) -> Callable[[etree._Element], str | None]:
    """The simulator finds a fee note's UUID where the daemon does (the CNS knows its
    own schema as the operator's configuration describes it)."""
    from .documents import DocumentError

    def read(root: etree._Element) -> str | None:
        try:
            return rule.uuid_of(root)
        except DocumentError:
            return None

    return read


if __name__ == "__main__":
    _child_main()
